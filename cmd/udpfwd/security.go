package main

import (
	"flag"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"

	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// securityFlags are the command line's security settings (issue: hostile
// networks). They apply to every relay, over the config file's.
type securityFlags struct {
	upstreamKey      string
	allowClients     listFlag
	allowCIDRs       listFlag
	denyCIDRs        listFlag
	maxSessions      int
	maxSessionsPerIP int
	newSessionsPerIP float64
	newSessionsBurst int
	clientRate       string
}

// listFlag is a repeatable flag; each value may also be a comma-separated
// list (except that a decimal-triple client ID "168,26,21" stays whole).
type listFlag struct {
	values []string
	triple bool // values are client IDs: keep "a,b,c" triples together
}

func (l *listFlag) String() string { return strings.Join(l.values, " ") }

func (l *listFlag) Set(s string) error {
	if l.triple {
		l.values = append(l.values, s)
		return nil
	}
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			l.values = append(l.values, v)
		}
	}
	return nil
}

func (f *securityFlags) register(fs *flag.FlagSet) {
	f.allowClients.triple = true
	fs.StringVar(&f.upstreamKey, "upstream-public-key", "", "open sessions only for handshakes whose mac1 is valid for this `BASE64` key (WARP's: "+wgproto.WARPPublicKey+")")
	fs.Var(&f.allowClients, "allow-client", "only this client `ID` may open sessions (repeatable; qBoV, a81a15 or 168,26,21)")
	fs.Var(&f.allowCIDRs, "allow-cidr", "only client addresses in this `CIDR` may open sessions (repeatable)")
	fs.Var(&f.denyCIDRs, "deny-cidr", "client addresses in this `CIDR` may not open sessions (repeatable; wins over --allow-cidr)")
	fs.IntVar(&f.maxSessions, "max-sessions", 0, "at most `N` sessions (default: derived from the open-file limit)")
	fs.IntVar(&f.maxSessionsPerIP, "max-sessions-per-ip", 0, "at most `N` sessions per client address, an IPv6 /64 as one (0: no cap)")
	fs.Float64Var(&f.newSessionsPerIP, "new-sessions-per-ip", 0, "at most `RATE` new sessions per second per client address (0: no limit)")
	fs.IntVar(&f.newSessionsBurst, "new-sessions-per-ip-burst", 0, "bursts of `N` new sessions per client address (default: the rate, at least 1)")
	fs.StringVar(&f.clientRate, "client-rate", "", "hold each client to `PPS[,BYTES]` per second each way, e.g. 5000,50MiB (handshakes are never held)")
}

// apply sets the security flags given on the command line over s.
func (f *securityFlags) apply(s *relay.Security, set map[string]bool) error {
	if set["upstream-public-key"] {
		k, err := wgproto.ParsePublicKey(f.upstreamKey)
		if err != nil {
			return fmt.Errorf("--upstream-public-key: %w", err)
		}
		s.UpstreamPublicKey = k
	}
	if set["allow-client"] {
		s.AllowClients = nil
		for _, v := range f.allowClients.values {
			id, err := wgproto.ParseClientID(v)
			if err != nil {
				return fmt.Errorf("--allow-client: %w", err)
			}
			s.AllowClients = append(s.AllowClients, id)
		}
	}
	var err error
	if set["allow-cidr"] {
		if s.AllowCIDRs, err = parsePrefixes("--allow-cidr", f.allowCIDRs.values); err != nil {
			return err
		}
	}
	if set["deny-cidr"] {
		if s.DenyCIDRs, err = parsePrefixes("--deny-cidr", f.denyCIDRs.values); err != nil {
			return err
		}
	}
	if set["max-sessions"] {
		if f.maxSessions < 1 {
			return fmt.Errorf("--max-sessions %d: must be at least 1", f.maxSessions)
		}
		s.MaxSessions = f.maxSessions
	}
	if set["max-sessions-per-ip"] {
		if f.maxSessionsPerIP < 0 {
			return fmt.Errorf("--max-sessions-per-ip %d: must not be negative", f.maxSessionsPerIP)
		}
		s.MaxSessionsPerIP = f.maxSessionsPerIP
	}
	if set["new-sessions-per-ip"] {
		if r := f.newSessionsPerIP; !(r >= 0) || math.IsInf(r, 1) {
			return fmt.Errorf("--new-sessions-per-ip %v: want a finite number >= 0", r)
		}
		s.NewSessionsPerIP = f.newSessionsPerIP
	}
	if set["new-sessions-per-ip-burst"] {
		if f.newSessionsBurst < 0 {
			return fmt.Errorf("--new-sessions-per-ip-burst %d: must not be negative", f.newSessionsBurst)
		}
		s.NewSessionsPerIPBurst = f.newSessionsBurst
	}
	if set["client-rate"] {
		if s.ClientRate, err = parseRate(f.clientRate); err != nil {
			return fmt.Errorf("--client-rate %q: %w", f.clientRate, err)
		}
	}
	return nil
}

// parsePrefixes reads CIDRs; a bare address means that one address.
func parsePrefixes(flagName string, vs []string) ([]netip.Prefix, error) {
	var ps []netip.Prefix
	for _, v := range vs {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return nil, fmt.Errorf("%s %q is not a CIDR (like 192.0.2.0/24 or 2001:db8::/32)", flagName, v)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%s %q has host bits set; write %s", flagName, v, p.Masked())
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// parseRate reads "PPS" or "PPS,BYTES" (BYTES like 50MiB), per second.
func parseRate(s string) (limits.Limits, error) {
	var l limits.Limits
	pps, bps, hasBytes := strings.Cut(s, ",")
	n, err := strconv.ParseFloat(strings.TrimSpace(pps), 64)
	if err != nil || !(n >= 0) || math.IsInf(n, 1) { // !(n >= 0) is true for NaN too
		return l, fmt.Errorf("datagrams per second %q is not a finite number >= 0", pps)
	}
	l.DatagramsPerSecond = n
	if hasBytes {
		b, err := config.ParseByteSize(strings.TrimSpace(bps))
		if err != nil {
			return l, fmt.Errorf("bytes per second: %w", err)
		}
		l.BytesPerSecond = float64(b)
	}
	return l, nil
}

// securityFromFile converts a config file's security section.
func securityFromFile(c *config.Security) relay.Security {
	return relay.Security{
		UpstreamPublicKey:     wgproto.PublicKey(c.UpstreamPublicKey),
		AllowClients:          c.AllowClients,
		AllowCIDRs:            c.AllowCIDRs,
		DenyCIDRs:             c.DenyCIDRs,
		MaxSessions:           c.MaxSessions,
		MaxSessionsPerIP:      c.MaxSessionsPerIP,
		NewSessionsPerIP:      c.NewSessionsPerIP,
		NewSessionsPerIPBurst: c.NewSessionsPerIPBurst,
		ClientRate: limits.Limits{
			DatagramsPerSecond: c.ClientRate.DatagramsPerSecond,
			BytesPerSecond:     float64(c.ClientRate.BytesPerSecond),
		},
	}
}
