package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestNoGSO: GSO is on unless the config file says "gso: false" or
// --no-gso is given, which wins over the file for every relay.
func TestNoGSO(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "udpfwd.yaml")
	if err := os.WriteFile(file, []byte(`relays:
  - name: on
    listen: 127.0.0.1:0
    upstream: 127.0.0.1:9
  - name: off
    listen: 127.0.0.1:0
    upstream: 127.0.0.1:9
    gso: false
`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
		want map[string]bool // relay name -> NoGSO
	}{
		{"file", []string{"-c", file}, map[string]bool{"on": false, "off": true}},
		{"flag over file", []string{"-c", file, "--no-gso"}, map[string]bool{"on": true, "off": true}},
		{"relay flags", []string{"-r", "127.0.0.1:0", "127.0.0.1:9"}, map[string]bool{"default": false}},
		{"relay flags, --no-gso", []string{"--no-gso", "-r", "127.0.0.1:0", "127.0.0.1:9"}, map[string]bool{"default": true}},
		{"forward rules, --no-gso", []string{"--no-gso", "-f", writeRules(t, dir)}, map[string]bool{"line1": true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parse(tt.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			f, _, err := o.config()
			if err != nil {
				t.Fatal(err)
			}
			if len(f.Relays) != len(tt.want) {
				t.Fatalf("%d relays, want %d", len(f.Relays), len(tt.want))
			}
			for _, c := range f.Relays {
				if want, ok := tt.want[c.Name]; !ok || c.NoGSO != want {
					t.Errorf("relay %q: NoGSO %v, want %v", c.Name, c.NoGSO, want)
				}
			}
		})
	}
}

func writeRules(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "rules")
	// config only builds the relays' configuration: nothing is bound.
	if err := os.WriteFile(p, []byte("127.0.0.1,5300,0.0.0.0,0,127.0.0.1,9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
