package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// schema lists the keys allowed in each mapping, by the mapping's path
// with list indexes written "[]". It drives the unknown-key check and its
// hints, and the test that the example config shows every key.
var schema = map[string][]string{
	"":    {"log", "admin", "state_file", "relays"},
	"log": {"level", "format"},
	"relays[]": {"name", "mode", "listen", "upstream", "idle_timeout", "resolve_interval",
		"upstream_bind", "upstream_ports", "read_buffer", "write_buffer", "gso", "security"},
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

// yamlLine matches the line number in the YAML parser's messages.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns the YAML parser's error into "name:line: message".
func syntaxError(name string, data []byte, err error) error {
	e := &Error{File: name, Msg: strings.TrimPrefix(err.Error(), "yaml: "), Err: err}
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Msg = m[2]
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

func (d *decoder) str(n *yaml.Node, path string, dst *string) {
	if s, ok := d.scalar(n, path); ok {
		*dst = s
	}
}

func (d *decoder) duration(n *yaml.Node, path string, dst *time.Duration) {
	s, ok := d.scalar(n, path)
	if !ok {
		return
	}
	v, err := time.ParseDuration(s)
	switch {
	case err != nil && strings.Trim(s, "0123456789") == "":
		d.errAt(n, path, err, "%q has no unit: write %ss, %sm, ...", s, s, s)
	case err != nil:
		d.errAt(n, path, err, "%q is not a duration (like 90s, 10m, 1h)", s)
	case v <= 0:
		d.errAt(n, path, nil, "%q: must be more than 0 (leave the key out for the default)", s)
	default:
		*dst = v
	}
}

func (d *decoder) integer(n *yaml.Node, path string, dst *int) {
	s, ok := d.scalar(n, path)
	if !ok {
		return
	}
	v, err := strconv.ParseInt(s, 10, 32)
	if err != nil || v < 0 {
		d.errAt(n, path, err, "%q is not a whole number 0..%d", s, math.MaxInt32)
		return
	}
	*dst = int(v)
}

func (d *decoder) rate(n *yaml.Node, path string, dst *float64) {
	s, ok := d.scalar(n, path)
	if !ok {
		return
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		d.errAt(n, path, err, "%q is not a rate: want a number 0 or more, per second", s)
		return
	}
	*dst = v
}

// size reads a byte size; positive says 0 is refused (a socket buffer).
func (d *decoder) size(n *yaml.Node, path string, positive bool) (int64, bool) {
	s, ok := d.scalar(n, path)
	if !ok {
		return 0, false
	}
	v, err := ParseByteSize(s)
	switch {
	case err != nil:
		d.errAt(n, path, err, "%v", err)
	case v > math.MaxInt32:
		d.errAt(n, path, nil, "%q is too large", s)
	case v == 0 && positive:
		d.errAt(n, path, nil, "%q: must be more than 0 (leave the key out for the default)", s)
	default:
		return v, true
	}
	return 0, false
}

func (d *decoder) file(n *yaml.Node, f *File) {
	d.src.lines[""] = n.Line
	d.mapping(n, "", func(key string, v *yaml.Node, path string) {
		switch key {
		case "log":
			d.mapping(v, path, func(key string, v *yaml.Node, path string) {
				switch key {
				case "level":
					d.str(v, path, &f.Log.Level)
				case "format":
					d.str(v, path, &f.Log.Format)
				}
			})
		case "admin":
			d.str(v, path, &f.Admin)
		case "state_file":
			d.str(v, path, &f.StateFile)
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
		}
	})
}

func (d *decoder) relay(n *yaml.Node, at string, r *Relay) {
	if n.Kind != yaml.MappingNode {
		d.errAt(n, at, nil, "want a relay (name, listen, upstream, ...), got %s", describe(n))
		return
	}
	d.mapping(n, at, func(key string, v *yaml.Node, path string) {
		switch key {
		case "name":
			d.str(v, path, &r.Name)
		case "mode":
			var s string
			d.str(v, path, &s)
			r.Mode = Mode(s)
		case "listen":
			d.list(v, path, func(v *yaml.Node, path string) {
				if s, ok := d.scalar(v, path); ok {
					if ap, err := parseListen(s); err != nil {
						d.errAt(v, path, err, "%v", err)
					} else {
						r.Listen = append(r.Listen, ap)
					}
				}
			})
		case "upstream":
			d.str(v, path, &r.Upstream)
		case "idle_timeout":
			d.duration(v, path, &r.IdleTimeout)
		case "resolve_interval":
			d.duration(v, path, &r.ResolveInterval)
		case "upstream_bind":
			if s, ok := d.scalar(v, path); ok && s != "" {
				if ap, err := parseBind(s); err != nil {
					d.errAt(v, path, err, "%v", err)
				} else {
					r.UpstreamBind = ap
				}
			}
		case "upstream_ports":
			if s, ok := d.scalar(v, path); ok && s != "" {
				if pr, err := ParsePortRange(s); err != nil {
					d.errAt(v, path, err, "%v", err)
				} else {
					r.UpstreamPorts = pr
				}
			}
		case "read_buffer":
			if b, ok := d.size(v, path, true); ok {
				r.ReadBuffer = int(b)
			}
		case "write_buffer":
			if b, ok := d.size(v, path, true); ok {
				r.WriteBuffer = int(b)
			}
		case "gso":
			if s, ok := d.scalar(v, path); ok {
				switch s {
				case "true":
					r.NoGSO = false
				case "false":
					r.NoGSO = true
				default:
					d.errAt(v, path, nil, "%q: want true or false", s)
				}
			}
		case "security":
			d.security(v, path, &r.Security)
		}
	})
}

func (d *decoder) security(n *yaml.Node, at string, s *Security) {
	d.mapping(n, at, func(key string, v *yaml.Node, path string) {
		switch key {
		case "upstream_public_key":
			if t, ok := d.scalar(v, path); ok && t != "" {
				if k, err := ParsePublicKey(t); err != nil {
					d.errAt(v, path, err, "%v", err)
				} else {
					s.UpstreamPublicKey = k
				}
			}
		case "allow_clients":
			d.list(v, path, func(v *yaml.Node, path string) {
				if id, ok := d.clientID(v, path); ok {
					s.AllowClients = append(s.AllowClients, id)
				}
			})
		case "allow_cidrs":
			d.list(v, path, func(v *yaml.Node, path string) { d.cidr(v, path, &s.AllowCIDRs) })
		case "deny_cidrs":
			d.list(v, path, func(v *yaml.Node, path string) { d.cidr(v, path, &s.DenyCIDRs) })
		case "max_sessions":
			d.integer(v, path, &s.MaxSessions)
		case "max_sessions_per_ip":
			d.integer(v, path, &s.MaxSessionsPerIP)
		case "new_sessions_per_ip":
			d.rate(v, path, &s.NewSessionsPerIP)
		case "new_sessions_per_ip_burst":
			d.integer(v, path, &s.NewSessionsPerIPBurst)
		case "client_rate":
			d.mapping(v, path, func(key string, v *yaml.Node, path string) {
				switch key {
				case "datagrams_per_second":
					d.rate(v, path, &s.ClientRate.DatagramsPerSecond)
				case "bytes_per_second":
					if b, ok := d.size(v, path, false); ok {
						s.ClientRate.BytesPerSecond = b
					}
				}
			})
		}
	})
}

// clientID reads one allowed client ID: a string in any form
// wgproto.ParseClientID reads, or a list of three bytes as sing-box and
// Xray write "reserved".
func (d *decoder) clientID(n *yaml.Node, path string) (wgproto.ClientID, bool) {
	text := n.Value
	if n.Kind == yaml.SequenceNode {
		parts := make([]string, 0, len(n.Content))
		for _, b := range n.Content {
			parts = append(parts, deref(b).Value)
		}
		text = strings.Join(parts, ",")
	} else if _, ok := d.scalar(n, path); !ok {
		return wgproto.ClientID{}, false
	}
	id, err := wgproto.ParseClientID(text)
	if err != nil {
		msg := err.Error()
		if text != "" && strings.Trim(text, "0123456789") == "" && len(text) <= 3 {
			msg += `; write a decimal triple as one item: ["168,26,21"] or [[168, 26, 21]]`
		}
		d.errAt(n, path, err, "%s", msg)
		return id, false
	}
	return id, true
}

// cidr reads a network; a bare address is a network of one.
func (d *decoder) cidr(n *yaml.Node, path string, dst *[]netip.Prefix) {
	s, ok := d.scalar(n, path)
	if !ok {
		return
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil {
			d.errAt(n, path, err, "%q is not a CIDR like 192.0.2.0/24 or 2001:db8::/32", s)
			return
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	*dst = append(*dst, p)
}

// parseListen reads "ip:port" for a listening socket.
func parseListen(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err == nil {
		return ap, nil
	}
	if strings.HasPrefix(s, ":") {
		return ap, fmt.Errorf("%q has no address: write [::]%s (every address) or 0.0.0.0%s (IPv4 only)", s, s, s)
	}
	if _, aerr := netip.ParseAddr(strings.Trim(s, "[]")); aerr == nil {
		return ap, fmt.Errorf("%q has no port: write it as ip:port", s)
	}
	return ap, fmt.Errorf("%q is not ip:port (write IPv6 as [::]:2408)", s)
}

// parseBind reads an upstream bind address: an IP, or ip:port.
func parseBind(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return netip.AddrPortFrom(a, 0), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, fmt.Errorf("%q is not an IP address (or ip:port in forward mode)", s)
	}
	return ap, nil
}
