package config

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// The parse functions below read the text of one value. Each kind of value
// has one, which the YAML decoder calls for a key and SetFlag for the flag
// that sets the same key: a key and its flag accept the same values and
// refuse the others with the same message. A message starts with the text
// as written, quoted; the caller puts the key's path or the flag's name in
// front.

// HostPort is an upstream's address as configured: an IP address or a DNS
// name, and a port. A name is looked up by the relay (again every
// resolve_interval); an address is used as it is.
type HostPort struct {
	// Name is the DNS name; empty when Addr is set.
	Name string
	// Addr is the IP address; the zero value when Name is set.
	Addr netip.Addr
	// Port is 1..65535.
	Port uint16
}

// HostPortFrom returns the HostPort of an IP address and port.
func HostPortFrom(ap netip.AddrPort) HostPort { return HostPort{Addr: ap.Addr(), Port: ap.Port()} }

// IsZero reports whether no address is set.
func (h HostPort) IsZero() bool { return h == HostPort{} }

// Host is the name, or the address as text.
func (h HostPort) Host() string {
	if h.Addr.IsValid() {
		return h.Addr.String()
	}
	return h.Name
}

// String returns "host:port" ("[2001:db8::1]:2408" for IPv6), the form
// ParseHostPort reads.
func (h HostPort) String() string {
	if h.IsZero() {
		return ""
	}
	return net.JoinHostPort(h.Host(), strconv.Itoa(int(h.Port)))
}

// ParseHostPort reads an upstream "host:port": the host is an IP address or
// a DNS name, the port 1..65535.
func ParseHostPort(s string) (HostPort, error) {
	host, port, err := splitHostPort(s, false)
	if err != nil {
		return HostPort{}, err
	}
	if host == "" {
		return HostPort{}, fmt.Errorf("%q: the host is missing", s)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return HostPort{Addr: a, Port: port}, nil
	}
	if !isDNSName(host) {
		return HostPort{}, fmt.Errorf("%q: %q is neither an IP address nor a host name", s, host)
	}
	return HostPort{Name: host, Port: port}, nil
}

// splitHostPort splits "host:port" and checks the port: 1..65535, or also
// 0 for a listener (where the kernel then chooses).
func splitHostPort(s string, listener bool) (string, uint16, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port (write IPv6 as [2001:db8::1]:2408)", s)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (n == 0 && !listener) {
		return "", 0, fmt.Errorf("%q: port %q is not 1..65535", s, port)
	}
	return host, uint16(n), nil
}

// parseAdmin reads the admin listener's "host:port": the host may be empty
// (every address) and the port 0 (the kernel chooses). Empty turns the
// listener off.
func parseAdmin(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	host, _, err := splitHostPort(s, true)
	if err != nil {
		return "", err
	}
	if _, aerr := netip.ParseAddr(host); aerr != nil && host != "" && !isDNSName(host) {
		return "", fmt.Errorf("%q: %q is neither an IP address nor a host name", s, host)
	}
	return s, nil
}

// parseStateFile reads the state file's path: absolute, a file. Empty turns
// saving off.
func parseStateFile(s string) (string, error) {
	if s != "" && (!filepath.IsAbs(s) || strings.HasSuffix(s, "/")) {
		return "", fmt.Errorf("%q: want an absolute file path (under systemd: /var/lib/udpfwd/state.json)", s)
	}
	return s, nil
}

// parseTokenFile reads the admin token file's path; empty is no token. The
// file itself is read by the command (admin.ReadTokenFile), at start and on
// every reload, so that a new token takes effect with a reload.
func parseTokenFile(s string) (string, error) {
	if strings.HasSuffix(s, "/") {
		return "", fmt.Errorf("%q: want a file, not a directory", s)
	}
	return s, nil
}

// parseAllowHost reads one further name the admin listener answers to in
// the Host header: a host name, an IP address, or "*" for any.
func parseAllowHost(s string) (string, error) {
	if s == "*" {
		return s, nil
	}
	if _, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return s, nil
	}
	if !isDNSName(s) {
		return "", fmt.Errorf("%q: want a host name, an IP address or *, without a port", s)
	}
	return s, nil
}

// logLevels and logFormats are what the logger takes.
var (
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"console", "json"}
)

// parseLogLevel and parseLogFormat read the logger's settings; empty is
// the default.
func parseLogLevel(s string) (string, error) {
	if s != "" && !slices.Contains(logLevels, s) {
		return "", fmt.Errorf("%q: want debug, info, warn or error", s)
	}
	return s, nil
}

func parseLogFormat(s string) (string, error) {
	if s != "" && !slices.Contains(logFormats, s) {
		return "", fmt.Errorf("%q: want console or json", s)
	}
	return s, nil
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

// parseListenSet reads one or more listening addresses, separated by
// commas: each "ip:port", or "ip:first-last" for every port of a range
// ("0.0.0.0:2400-2410"), so that a relay can listen on the many ports WARP
// answers on ("[::]:2408,[::]:500,[::]:1701,[::]:4500").
func parseListenSet(s string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" && strings.Contains(s, ",") {
			return nil, fmt.Errorf("%q: an empty address in the list", s)
		}
		i := strings.LastIndex(part, ":")
		first, last, isRange := strings.Cut(part[i+1:], "-")
		if i < 0 || !isRange {
			ap, err := parseListen(part)
			if err != nil {
				return nil, err
			}
			out = append(out, ap)
			continue
		}
		ap, err := parseListen(part[:i+1] + first)
		if err != nil {
			return nil, err
		}
		lo := ap.Port()
		hi, err := strconv.ParseUint(last, 10, 16)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%q: port %q is not 1..65535", part, last)
		case lo == 0 || uint64(lo) > hi:
			return nil, fmt.Errorf("%q: want a range first-last within 1..65535", part)
		case hi-uint64(lo)+1 > MaxListen:
			return nil, fmt.Errorf("%q is %d ports: a relay listens on at most %d", part, hi-uint64(lo)+1, MaxListen)
		}
		for p := uint64(lo); p <= hi; p++ {
			out = append(out, netip.AddrPortFrom(ap.Addr(), uint16(p)))
		}
	}
	return out, nil
}

// parseUpstreams reads one or more upstream endpoints, "host:port",
// separated by commas: a pool that sessions are spread over by handshake
// round trip and fail over within.
func parseUpstreams(s string) ([]HostPort, error) {
	var out []HostPort
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" && strings.Contains(s, ",") {
			return nil, fmt.Errorf("%q: an empty endpoint in the list", s)
		}
		h, err := ParseHostPort(part)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

// parseFailoverAfter reads failover_after: how many handshake initiations
// in a row may go unanswered before a session moves, 1..MaxFailoverAfter.
func parseFailoverAfter(s string) (int, error) {
	v, err := strconv.ParseInt(s, 10, 32)
	if err != nil || v < 1 || v > MaxFailoverAfter {
		return 0, fmt.Errorf("%q is not a whole number 1..%d", s, MaxFailoverAfter)
	}
	return int(v), nil
}

// parseBind reads an upstream bind address: an IP, or ip:port. Empty is
// none (the kernel chooses).
func parseBind(s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, nil
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return netip.AddrPortFrom(a, 0), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, fmt.Errorf("%q is not an IP address (or ip:port in forward mode)", s)
	}
	return ap, nil
}

// parsePorts reads an upstream port range; empty is none.
func parsePorts(s string) (PortRange, error) {
	if s == "" {
		return PortRange{}, nil
	}
	return ParsePortRange(s)
}

// parseDuration reads a positive duration with a unit.
func parseDuration(s string) (time.Duration, error) {
	v, err := time.ParseDuration(s)
	switch {
	case err != nil && s != "" && strings.Trim(s, "0123456789") == "":
		return 0, fmt.Errorf("%q has no unit: write %ss, %sm, ...", s, s, s)
	case err != nil:
		return 0, fmt.Errorf("%q is not a duration (like 90s, 10m, 1h)", s)
	case v <= 0:
		return 0, fmt.Errorf("%q: must be more than 0", s)
	}
	return v, nil
}

// parseBuffer reads a socket buffer size, MinSocketBuffer..MaxSocketBuffer.
func parseBuffer(s string) (int, error) {
	v, err := ParseByteSize(s)
	if err != nil {
		return 0, err
	}
	if err := checkBuffer(s, int64(v)); err != nil {
		return 0, err
	}
	return int(v), nil
}

// checkBuffer refuses a socket buffer size out of range; text is how it was
// written.
func checkBuffer(text string, v int64) error {
	want := FormatByteSize(MinSocketBuffer) + ".." + FormatByteSize(MaxSocketBuffer)
	switch {
	case v < MinSocketBuffer && strings.Trim(text, "0123456789") == "" && v > 0:
		return fmt.Errorf("%q is too small (%d bytes): want %s; write %dMiB for %d mebibytes", text, v, want, v, v)
	case v < MinSocketBuffer:
		return fmt.Errorf("%q is too small: want %s", text, want)
	case v > MaxSocketBuffer:
		return fmt.Errorf("%q is too large: want %s", text, want)
	}
	return nil
}

// parseCount reads a whole number 0..MaxInt32 (a cap, a burst).
func parseCount(s string) (int, error) {
	v, err := strconv.ParseInt(s, 10, 32)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q is not a whole number 0..%d", s, math.MaxInt32)
	}
	return int(v), nil
}

// parseRate reads a rate per second: a finite number, 0 or more, maybe
// fractional. NaN and infinity are refused: a NaN rate compares false with
// everything, so a limiter would let everything through.
func parseRate(s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !validRate(v) {
		return 0, fmt.Errorf("%q is not a rate: want a number 0 or more, per second", s)
	}
	return v, nil
}

// validRate reports whether r is finite and 0 or more (false for NaN).
func validRate(r float64) bool { return r >= 0 && !math.IsInf(r, 1) }

// parseByteRate reads a rate in bytes per second, a size (10MiB), at most
// MaxInt32.
func parseByteRate(s string) (int64, error) {
	v, err := ParseByteSize(s)
	if err != nil {
		return 0, err
	}
	if v > math.MaxInt32 {
		return 0, fmt.Errorf("%q is too large: want at most %s", s, FormatByteSize(math.MaxInt32+1))
	}
	return v, nil
}

// parseBool reads true or false.
func parseBool(s string) (bool, error) {
	switch s {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("%q: want true or false", s)
}

// parseKey reads the upstream's public key; empty is none.
func parseKey(s string) (PublicKey, error) {
	if s == "" {
		return PublicKey{}, nil
	}
	return ParsePublicKey(s)
}

// parseClientID reads a client ID in any form WARP tools print.
func parseClientID(s string) (wgproto.ClientID, error) { return wgproto.ParseClientID(s) }

// parseCIDR reads a network; a bare address is a network of one. A network
// with host bits set is refused with the network it probably means.
func parseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil {
			return p, fmt.Errorf("%q is not a CIDR like 192.0.2.0/24 or 2001:db8::/32", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p != p.Masked() {
		return p, fmt.Errorf("%q has host bits set; write %s", s, p.Masked())
	}
	return p, nil
}

// isDNSName reports whether s is a syntactically valid host name.
func isDNSName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
