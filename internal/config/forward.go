// Package config reads the relay's configuration files.
package config

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// ForwardRule is one line of a static forward file: datagrams arriving on
// In are sent from Out to Dest; replies go back to the newest client.
type ForwardRule struct {
	Line int // where it was written, for messages
	In   netip.AddrPort
	// Out is the outbound socket's address; port 0 lets the kernel choose.
	Out netip.AddrPort
	// Dest is "host:port"; the host may be a name.
	Dest string
}

// ParseForwardRules reads a static forward file: one rule per line (or
// separated by ';'), each "in-addr,in-port,out-addr,out-port,dest-addr,dest-port".
// Blank lines and '#' comments are ignored. name is used in errors, which
// read "name:line: problem".
func ParseForwardRules(r io.Reader, name string) ([]ForwardRule, error) {
	var rules []ForwardRule
	seen := make(map[netip.AddrPort]int)
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		for _, part := range strings.Split(text, ";") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			rule, err := parseForwardRule(part)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", name, line, err)
			}
			if prev, dup := seen[rule.In]; dup && rule.In.Port() != 0 {
				return nil, fmt.Errorf("%s:%d: %s is already used on line %d", name, line, rule.In, prev)
			}
			seen[rule.In] = line
			rule.Line = line
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
	r.Dest = net.JoinHostPort(f[4], strconv.Itoa(int(port)))
	return r, nil
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
