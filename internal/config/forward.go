package config

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/udpfwd/udpfwd/internal/fileio"
)

// ForwardRule is one line of a static forward file: datagrams arriving on
// In are sent from Out to Dest; replies go back to the newest client.
type ForwardRule struct {
	Line int // where it was written, for messages
	// Index is the rule's place on its line, from 1, when the line holds
	// several rules (separated by ';'); 0 when it holds one.
	Index int
	In    netip.AddrPort
	// Out is the outbound socket's address; port 0 lets the kernel choose.
	Out netip.AddrPort
	// Dest is where datagrams go; the host may be a name.
	Dest HostPort
}

// ParseForwardRules reads a static forward file: one rule per line (or
// separated by ';'), each "in-addr,in-port,out-addr,out-port,dest-addr,dest-port".
// Blank lines and '#' comments are ignored. name is used in errors, which
// read "name:line: problem".
func ParseForwardRules(r io.Reader, name string) ([]ForwardRule, error) {
	var rules []ForwardRule
	seen := make(map[netip.AddrPort]ForwardRule)
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		var parts []string
		for _, part := range strings.Split(text, ";") {
			if part = strings.TrimSpace(part); part != "" {
				parts = append(parts, part)
			}
		}
		for k, part := range parts {
			at := ForwardRule{Line: line}
			if len(parts) > 1 {
				at.Index = k + 1
			}
			rule, err := parseForwardRule(part)
			if err != nil {
				return nil, fmt.Errorf("%s:%s: %w", name, at.place(), err)
			}
			if prev, dup := seen[rule.In]; dup && rule.In.Port() != 0 {
				return nil, fmt.Errorf("%s:%s: %s is already used on line %s", name, at.place(), rule.In, prev.place())
			}
			rule.Line, rule.Index = at.Line, at.Index
			seen[rule.In] = rule
			rules = append(rules, rule)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(rules) == 0 {
		return nil, fmt.Errorf("%s: no rules (want lines in-addr,in-port,out-addr,out-port,dest-addr,dest-port)", name)
	}
	return rules, nil
}

// place is where the rule was written: "4" for line 4, "4:2" for the
// second of several rules on line 4.
func (r ForwardRule) place() string {
	if r.Index > 0 {
		return fmt.Sprintf("%d:%d", r.Line, r.Index)
	}
	return strconv.Itoa(r.Line)
}

func parseForwardRule(s string) (ForwardRule, error) {
	f := strings.Split(s, ",")
	if len(f) != 6 {
		return ForwardRule{}, fmt.Errorf("%q: want 6 fields in-addr,in-port,out-addr,out-port,dest-addr,dest-port, got %d", s, len(f))
	}
	for i := range f {
		f[i] = strings.Trim(strings.TrimSpace(f[i]), "[]")
	}
	var r ForwardRule
	var err error
	if r.In, err = addrPort("in", f[0], f[1], false); err != nil {
		return r, err
	}
	if r.Out, err = addrPort("out", f[2], f[3], true); err != nil {
		return r, err
	}
	if f[4] == "" {
		return r, fmt.Errorf("dest-addr is empty")
	}
	port, err := parsePort("dest", f[5], false)
	if err != nil {
		return r, err
	}
	r.Dest = HostPort{Name: f[4], Port: port}
	if a, err := netip.ParseAddr(f[4]); err == nil {
		r.Dest = HostPort{Addr: a, Port: port}
	}
	return r, nil
}

// ReadForward reads the static forward file at path ("udpfwd -f FILE") as
// a config: one forward relay per rule, named "line" and its line number
// ("line4"; of several rules on line 4, "line4", "line4-2", ...): names are
// metric labels, so they keep to [a-z0-9_-]. Where a rule was written is
// its origin (Origin: "rules:4", or "rules:4:2" for the second rule of
// line 4), which messages about its values name with its field
// ("rules:3: dest: ...", "rules:4:2: in: ..."). Flags are applied with
// SetFlag, then the whole is checked with Validate.
func ReadForward(path string) (*File, error) {
	data, err := fileio.ReadFile(path, fileio.MaxSize)
	if err != nil {
		return nil, fmt.Errorf("forward file: %w", err)
	}
	rules, err := ParseForwardRules(bytes.NewReader(data), path)
	if err != nil {
		return nil, err
	}
	f := &File{src: &source{name: path, lines: map[string]int{}, forward: true, index: map[string]int{}}}
	for i, rule := range rules {
		name := "line" + strconv.Itoa(rule.Line)
		if rule.Index > 1 { // rules separated by ';'
			name += "-" + strconv.Itoa(rule.Index)
		}
		f.Relays = append(f.Relays, Relay{
			Name:         name,
			Mode:         ModeForward,
			Listen:       []netip.AddrPort{rule.In},
			Upstream:     rule.Dest,
			UpstreamBind: rule.Out,
		})
		at := fmt.Sprintf("relays[%d]", i)
		f.src.lines[at] = rule.Line
		f.src.lines[at+".listen[0]"] = rule.Line
		if rule.Index > 0 {
			f.src.index[at] = rule.Index
		}
	}
	return f, nil
}

func addrPort(what, addr, port string, zeroOK bool) (netip.AddrPort, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s-addr %q is not an IP address", what, addr)
	}
	p, err := parsePort(what, port, zeroOK)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(a, p), nil
}

func parsePort(what, s string, zeroOK bool) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || (n == 0 && !zeroOK) {
		lo := "1"
		if zeroOK {
			lo = "0"
		}
		return 0, fmt.Errorf("%s-port %q is not %s..65535", what, s, lo)
	}
	return uint16(n), nil
}

// Origin is where relays[i] was written, "file:line" ("file:line:index"
// for one of several rules on a line of a forward file), or "" for a relay
// the file did not have (from the command line, or added in code).
func (f *File) Origin(i int) string {
	if f.src == nil || f.src.name == "" {
		return ""
	}
	at := fmt.Sprintf("relays[%d]", i)
	if l := f.src.lines[at]; l > 0 {
		return f.src.name + ":" + ForwardRule{Line: l, Index: f.src.index[at]}.place()
	}
	return ""
}
