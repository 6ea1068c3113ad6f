package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// schema lists the keys allowed in each mapping, by the mapping's path
// with list indexes written "[]". It drives the unknown-key check and its
// hints, and the test that the example config shows every key.
var schema = map[string][]string{
	"":        {"log", "admin", "admin_token_file", "admin_allow_hosts", "state_file", "cluster", "relays"},
	"log":     {"level", "format"},
	"cluster": {"name", "bind", "peers", "etcd", "reply", "tls_cert", "tls_key", "tls_ca", "insecure"},
	"relays[]": {"name", "mode", "listen", "upstream", "failover_after", "idle_timeout", "resolve_interval",
		"upstream_bind", "upstream_ports", "read_buffer", "write_buffer", "gso", "workers", "reuse_port",
		"zero_id", "stamp_client_id", "message_types", "security"},
	"relays[].security": {"upstream_public_key", "allow_clients", "allow_cidrs", "deny_cidrs",
		"max_sessions", "max_sessions_per_ip", "new_sessions_per_ip", "new_sessions_per_ip_burst", "client_rate"},
	"relays[].security.client_rate": {"datagrams_per_second", "bytes_per_second"},
}

// decoder turns the YAML node tree into a File, recording each key's line
// and collecting every problem rather than stopping at the first.
type decoder struct {
	src *source
	p   *problems
}

// decode parses data into a File without validating it as a whole.
func decode(data []byte, name string) (*File, error) {
	d := &decoder{src: &source{name: name, lines: make(map[string]int)}}
	d.p = &problems{src: d.src}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: name, Msg: "empty config: want at least a relays list", Err: err}
		}
		return nil, syntaxError(name, data, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, &Error{File: name, Msg: "empty config: want at least a relays list"}
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, &Error{File: name, Line: next.Line, Msg: "a second YAML document (after ---): write one document"}
	case !errors.Is(err, io.EOF):
		return nil, syntaxError(name, data, err)
	}
	f := &File{src: d.src}
	d.file(doc.Content[0], f)
	if err := d.p.err(); err != nil {
		return nil, err
	}
	return f, nil
}

// syntaxError turns the YAML parser's error into "name:line: message".
//
// Keys and values are placed by the nodes' positions (yaml.Node.Line). A
// syntax error leaves no node, and yaml.v3 (go.yaml.in/yaml/v3 v3.0.6) has
// no typed error for it: the line exists only in its message, "yaml: line
// N: problem". That prefix is the one fallback read from the text.
func syntaxError(name string, data []byte, err error) error {
	e := &Error{File: name, Msg: strings.TrimPrefix(err.Error(), "yaml: "), Err: err}
	if rest, ok := strings.CutPrefix(e.Msg, "line "); ok {
		if n, msg, ok := strings.Cut(rest, ": "); ok {
			if line, aerr := strconv.Atoi(n); aerr == nil {
				e.Line, e.Msg = line, msg
			}
		}
	}
	if strings.Contains(e.Msg, "found character that cannot start any token") && bytes.Contains(data, []byte("\t")) {
		e.Msg += " (indent with spaces: YAML does not allow tabs)"
	}
	return e
}

// errAt records a problem at node n.
func (d *decoder) errAt(n *yaml.Node, path string, err error, format string, args ...any) {
	d.p.errs = append(d.p.errs, &Error{File: d.src.name, Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...), Err: err})
}

// deref follows YAML aliases (*name) to the node they stand for.
func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// isNull reports an empty value ("key:" or "key: null"), which leaves the
// key unset.
func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// describe names a node's kind for messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "something else"
}

// schemaPath writes a key path's list indexes as "[]".
var indexRE = regexp.MustCompile(`\[\d+\]`)

func schemaPath(path string) string { return indexRE.ReplaceAllString(path, "[]") }

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// mapping walks a mapping's keys, rejecting unknown and repeated ones, and
// calls set for each value.
func (d *decoder) mapping(n *yaml.Node, path string, set func(key string, v *yaml.Node, path string)) {
	n = deref(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errAt(n, path, nil, "want keys and values, got %s", describe(n))
		return
	}
	allowed := schema[schemaPath(path)]
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errAt(k, path, nil, "a key must be a name, got %s", describe(k))
			continue
		}
		kp := join(path, k.Value)
		switch prev, dup := seen[k.Value]; {
		case k.Value == "<<":
			d.errAt(k, path, nil, "merge keys (<<) are not supported: write the keys out")
			continue
		case dup:
			d.errAt(k, kp, nil, "set twice (first on line %d)", prev)
			continue
		case !slices.Contains(allowed, k.Value):
			d.errAt(k, kp, nil, "unknown key%s", hint(k.Value, schemaPath(path)))
			continue
		}
		seen[k.Value] = k.Line
		d.src.lines[kp] = k.Line
		set(k.Value, deref(v), kp)
	}
}

// hint suggests what an unknown key at level was meant to be: the same key
// at another level, or a known key a small edit away.
func hint(key, level string) string {
	norm := strings.ToLower(strings.ReplaceAll(key, "-", "_"))
	for _, l := range slices.Sorted(maps.Keys(schema)) {
		if l != level && slices.Contains(schema[l], norm) {
			where := "at the top level"
			if l != "" {
				where = "under " + l
			}
			return fmt.Sprintf("; %q belongs %s", norm, where)
		}
	}
	best, bestDist := "", 3
	for _, k := range schema[level] {
		if dist := editDistance(norm, k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best != "" {
		return fmt.Sprintf("; did you mean %q?", best)
	}
	return fmt.Sprintf(" (known here: %s)", strings.Join(schema[level], ", "))
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// scalar returns a scalar's text; ok is false (and a problem recorded)
// for a list or mapping, and false without a problem for an empty value.
func (d *decoder) scalar(n *yaml.Node, path string) (string, bool) {
	if isNull(n) {
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		d.errAt(n, path, nil, "want a single value, got %s", describe(n))
		return "", false
	}
	return n.Value, true
}

// list calls item for each element of a list; a single value is a list of
// one.
func (d *decoder) list(n *yaml.Node, path string, item func(v *yaml.Node, path string)) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.src.lines[path+"[0]"] = n.Line
		item(n, path+"[0]")
		return
	}
	for i, v := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.src.lines[p] = v.Line
		item(deref(v), p)
	}
}

// set parses the scalar at n with a key's parse function.
func (d *decoder) set(n *yaml.Node, path string, parse func(string) error) {
	if s, ok := d.scalar(n, path); ok {
		if err := parse(s); err != nil {
			d.errAt(n, path, err, "%v", err)
		}
	}
}

func (d *decoder) file(n *yaml.Node, f *File) {
	d.src.lines[""] = n.Line
	d.mapping(n, "", func(key string, v *yaml.Node, path string) {
		switch key {
		case "log":
			d.mapping(v, path, func(_ string, v *yaml.Node, path string) {
				d.set(v, path, func(s string) error { return fileKeys[path](f, s) })
			})
		case "relays":
			if v.Kind != yaml.SequenceNode && !isNull(v) {
				d.errAt(v, path, nil, "want a list of relays (lines starting with '- '), got %s", describe(v))
				return
			}
			for i, item := range v.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				d.src.lines[p] = item.Line
				var r Relay
				d.relay(deref(item), p, &r)
				f.Relays = append(f.Relays, r)
			}
		case "admin_allow_hosts":
			d.list(v, path, func(v *yaml.Node, p string) {
				d.set(v, p, func(s string) error { return fileLists[path](f, s) })
			})
		case "cluster":
			d.mapping(v, path, func(_ string, v *yaml.Node, path string) {
				if add := fileLists[path]; add != nil {
					d.list(v, path, func(v *yaml.Node, p string) {
						d.set(v, p, func(s string) error { return add(f, s) })
					})
					return
				}
				d.set(v, path, func(s string) error { return fileKeys[path](f, s) })
			})
		default:
			d.set(v, path, func(s string) error { return fileKeys[path](f, s) })
		}
	})
}

// relay decodes the relay at n, whose path is at: every key goes to its
// entry in relayKeys or relayLists, by its path below the relay.
func (d *decoder) relay(n *yaml.Node, at string, r *Relay) {
	if n.Kind != yaml.MappingNode {
		d.errAt(n, at, nil, "want a relay (name, listen, upstream, ...), got %s", describe(n))
		return
	}
	var keys func(n *yaml.Node, path string)
	keys = func(n *yaml.Node, path string) {
		d.mapping(n, path, func(_ string, v *yaml.Node, path string) {
			key := strings.TrimPrefix(path, at+".")
			switch {
			case key == "security" || key == "security.client_rate":
				keys(v, path)
			case key == "stamp_client_id" && v.Kind == yaml.SequenceNode:
				// [168, 26, 21], as sing-box and Xray write "reserved".
				d.set(&yaml.Node{Kind: yaml.ScalarNode, Line: v.Line, Value: joinScalars(v)}, path,
					func(s string) error { return relayKeys[key](r, s) })
			case key == "security.allow_clients":
				d.list(v, path, func(v *yaml.Node, path string) { d.clientID(v, path, r) })
			case key == "upstream" && v.Kind != yaml.SequenceNode:
				// One value, as most relays have: "upstream", not "upstream[0]".
				d.set(v, path, func(s string) error { return relayLists[key](r, s) })
				for i := range listLen(r, key) {
					d.src.lines[fmt.Sprintf("%s[%d]", path, i)] = v.Line
				}
			case relayLists[key] != nil:
				lines := map[int]int{}
				d.list(v, path, func(v *yaml.Node, p string) {
					before := listLen(r, key)
					d.set(v, p, func(s string) error { return relayLists[key](r, s) })
					for i := before; i < listLen(r, key); i++ {
						lines[i] = v.Line
					}
				})
				for i, l := range lines {
					d.src.lines[fmt.Sprintf("%s[%d]", path, i)] = l
				}
			default:
				d.set(v, path, func(s string) error { return relayKeys[key](r, s) })
			}
		})
	}
	keys(n, at)
}

// listLen is how many elements the list key of r holds, for keys whose
// one value in the file may add several (a port range, a comma list), so
// that a message about the fifth port of a range names the range's line;
// 0 for the others, whose elements are the file's own.
func listLen(r *Relay, key string) int {
	switch key {
	case "listen":
		return len(r.Listen)
	case "upstream":
		return len(r.Endpoints())
	}
	return 0
}

// joinScalars writes the items of a list as one comma-separated value.
func joinScalars(n *yaml.Node) string {
	parts := make([]string, 0, len(n.Content))
	for _, b := range n.Content {
		parts = append(parts, deref(b).Value)
	}
	return strings.Join(parts, ",")
}

// clientID reads one allowed client ID: a string in any form
// wgproto.ParseClientID reads, or a list of three bytes as sing-box and
// Xray write "reserved".
func (d *decoder) clientID(n *yaml.Node, path string, r *Relay) {
	text := n.Value
	if n.Kind == yaml.SequenceNode {
		parts := make([]string, 0, len(n.Content))
		for _, b := range n.Content {
			parts = append(parts, deref(b).Value)
		}
		text = strings.Join(parts, ",")
	} else if _, ok := d.scalar(n, path); !ok {
		return
	}
	if err := relayLists["security.allow_clients"](r, text); err != nil {
		msg := err.Error()
		if text != "" && strings.Trim(text, "0123456789") == "" && len(text) <= 3 {
			// YAML read [168, 26, 21] as three items.
			msg += `; write a decimal triple as one item: ["168,26,21"] or [[168, 26, 21]]`
		}
		d.errAt(n, path, err, "%s", msg)
	}
}
