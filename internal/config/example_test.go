package config

import (
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// examplePath is the commented example config that ships with the command.
const examplePath = "../../cmd/udpfwd/udpfwd.example.yaml"

func TestExampleConfigIsValid(t *testing.T) {
	f, err := Load(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Relays) == 0 || f.Relays[0].Security.UpstreamPublicKey.IsZero() {
		t.Errorf("example config: want a relay with WARP's public key, got %+v", f.Relays)
	}
	if _, err := f.Effective(); err != nil {
		t.Errorf("Effective of the example: %v", err)
	}
}

// TestExampleConfigShowsEveryKey keeps the example complete: every key
// the parser knows appears in it, uncommented.
func TestExampleConfigShowsEveryKey(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]bool)
	var walk func(n *yaml.Node, level string)
	walk = func(n *yaml.Node, level string) {
		switch n.Kind {
		case yaml.DocumentNode:
			walk(n.Content[0], level)
		case yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, level+"[]")
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				path := join(level, n.Content[i].Value)
				seen[path] = true
				walk(n.Content[i+1], path)
			}
		}
	}
	walk(&doc, "")
	for level, keys := range schema {
		for _, k := range keys {
			if !seen[join(level, k)] {
				t.Errorf("the example config does not show %s", join(level, k))
			}
		}
	}
}

// TestSchemaMatchesEffective checks that the schema, which the parser
// accepts, and the effective config's keys, which check prints, are the
// same set: a key added to one is added to the other.
func TestSchemaMatchesEffective(t *testing.T) {
	f, err := Parse([]byte("relays:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:1\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.Effective()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	var walk func(v any, level string)
	walk = func(v any, level string) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				got[level] = append(got[level], k)
				walk(c, join(level, k))
			}
		case []any:
			for _, c := range v {
				walk(c, level+"[]")
			}
		}
	}
	walk(m, "")
	for level, keys := range schema {
		want := slices.Sorted(slices.Values(keys)) // schema itself stays in file order
		g := slices.Sorted(slices.Values(got[level]))
		if !slices.Equal(want, g) {
			t.Errorf("%q: schema %s, effective %s", level, strings.Join(want, ","), strings.Join(g, ","))
		}
	}
}
