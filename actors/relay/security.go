package relay

import (
	"fmt"
	"math"
	"net/netip"

	"golang.org/x/time/rate"

	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Security says who may use a relay and how much. The zero value admits
// every client ID from everywhere, up to the default session cap.
type Security struct {
	// UpstreamPublicKey, if set, makes a handshake initiation count only if
	// its mac1 is valid for this key (WARP's is wgproto.WARPPublicKey):
	// junk neither opens sessions nor reaches the upstream.
	UpstreamPublicKey wgproto.PublicKey
	// AllowClients, if not empty, are the only client IDs that may open
	// sessions.
	AllowClients []wgproto.ClientID
	// AllowCIDRs, if not empty, are the only client addresses that may open
	// sessions; DenyCIDRs may not, whatever AllowCIDRs says.
	AllowCIDRs, DenyCIDRs []netip.Prefix
	// MaxSessions caps the relay's sessions; zero means a default derived
	// from the open-file limit (limits.DefaultMaxSessions).
	MaxSessions int
	// MaxSessionsPerIP caps the sessions of one client address (an IPv6
	// /64 counts as one); zero means no cap.
	MaxSessionsPerIP int
	// NewSessionsPerIP is how many sessions per second one client address
	// may open, with bursts of NewSessionsPerIPBurst; zero means no limit.
	NewSessionsPerIP      float64
	NewSessionsPerIPBurst int
	// ClientRate holds every client to a rate limit, each direction apart;
	// the zero value is unlimited. Handshakes are never limited.
	ClientRate limits.Limits
}

// validate checks the values. Rates must be finite: a NaN rate compares
// false with everything, so the limiters would let everything through.
func (s *Security) validate() error {
	switch {
	case s.MaxSessions < 0:
		return fmt.Errorf("max sessions %d: must not be negative", s.MaxSessions)
	case s.MaxSessionsPerIP < 0:
		return fmt.Errorf("max sessions per IP %d: must not be negative", s.MaxSessionsPerIP)
	case !validRate(s.NewSessionsPerIP) || s.NewSessionsPerIPBurst < 0:
		return fmt.Errorf("new sessions per IP %v (burst %d): want a finite rate and a burst, neither negative", s.NewSessionsPerIP, s.NewSessionsPerIPBurst)
	case !validRate(s.ClientRate.DatagramsPerSecond) || !validRate(s.ClientRate.BytesPerSecond):
		return fmt.Errorf("client rate %v datagrams/s, %v bytes/s: want finite rates, not negative", s.ClientRate.DatagramsPerSecond, s.ClientRate.BytesPerSecond)
	}
	return nil
}

// validRate reports whether r is a finite rate >= 0 (false for NaN).
func validRate(r float64) bool { return r >= 0 && !math.IsInf(r, 1) }

// maxSessions is the session cap in force.
func (s *Security) maxSessions() int {
	if s.MaxSessions > 0 {
		return s.MaxSessions
	}
	nofile, _ := limits.OpenFileLimit()
	return limits.DefaultMaxSessions(nofile)
}

// policies builds the chain of policy actors the relay's security asks
// for, cheapest refusals first, then extra (an operator's own policies).
// Caps come after the allow-lists, so a refused attempt spends no rate.
// One Caps state serves the whole relay.
func (s *Security) policies(extra policy.Factory) policy.Factory {
	var chain []policy.Factory
	if len(s.AllowClients) > 0 {
		chain = append(chain, policy.ClientIDs(s.AllowClients))
	}
	if len(s.AllowCIDRs) > 0 || len(s.DenyCIDRs) > 0 {
		chain = append(chain, policy.Sources(s.AllowCIDRs, s.DenyCIDRs))
	}
	perIP := rate.Inf
	if s.NewSessionsPerIP > 0 {
		perIP = rate.Limit(s.NewSessionsPerIP)
	}
	chain = append(chain, policy.Caps(s.maxSessions(), s.MaxSessionsPerIP, perIP, s.NewSessionsPerIPBurst))
	if !s.ClientRate.Unlimited() {
		chain = append(chain, policy.ClientRate(s.ClientRate, nil))
	}
	if extra != nil {
		chain = append(chain, extra)
	}
	return policy.Chain(chain...)
}

// mac1Key is the supervisor's mac1 key, or nil when no key is set.
func (s *Security) mac1Key() *wgproto.MAC1Key {
	if s.UpstreamPublicKey == (wgproto.PublicKey{}) {
		return nil
	}
	k := wgproto.NewMAC1Key(s.UpstreamPublicKey)
	return &k
}
