package relay

import (
	"math"
	"time"

	"golang.org/x/time/rate"

	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// maxSessions is the session cap in force: the configured one, or one
// derived from the open-file limit.
func maxSessions(s *config.Security) int {
	if s.MaxSessions > 0 {
		return s.MaxSessions
	}
	nofile, _ := limits.OpenFileLimit()
	return limits.DefaultMaxSessions(nofile)
}

// clientRate is the per-client limit the config asks for.
func clientRate(s *config.Security) limits.Limits {
	return limits.Limits{
		DatagramsPerSecond: s.ClientRate.DatagramsPerSecond,
		BytesPerSecond:     float64(s.ClientRate.BytesPerSecond),
	}
}

// capsConfig is the relay's session caps as the config asks for them.
func capsConfig(s *config.Security) limits.CapsConfig {
	perIP := rate.Inf
	if s.NewSessionsPerIP > 0 {
		perIP = rate.Limit(s.NewSessionsPerIP)
	}
	return limits.CapsConfig{
		MaxSessions:  maxSessions(s),
		MaxPerSource: s.MaxSessionsPerIP,
		SourceRate:   perIP,
		SourceBurst:  s.NewSessionsPerIPBurst,
	}
}

// policies builds the chain of policy actors the relay's security asks
// for, cheapest refusals first, then the operator's own policies. Caps
// come after the allow-lists, so a refused attempt spends no rate. Every
// chain counts against the relay's one Caps state, so that a reload, which
// builds a new chain for new admissions, keeps the counts of the sessions
// admitted before it.
func (r *Relay) policies(s *config.Security) policy.Factory {
	var chain []policy.Factory
	if len(s.AllowClients) > 0 {
		chain = append(chain, policy.ClientIDs(s.AllowClients))
	}
	if len(s.AllowCIDRs) > 0 || len(s.DenyCIDRs) > 0 {
		chain = append(chain, policy.Sources(s.AllowCIDRs, s.DenyCIDRs))
	}
	chain = append(chain, policy.CapsShared(r.caps))
	if l := clientRate(s); !l.Unlimited() {
		chain = append(chain, policy.ClientRate(l, nil))
	}
	if r.policy != nil {
		chain = append(chain, r.policy)
	}
	return policy.Chain(chain...)
}

// admission is the supervisor's budget for opening sessions
// (limits.Admission): the built-in defaults, with the per-source rate and
// burst raised to --new-sessions-per-ip's where those are higher, so that
// an operator who allows a source more new sessions (a relay behind one
// NAT address) gets them, and one who allows fewer is held to it by the
// Caps policy.
func admission(s *config.Security) *limits.Admission {
	return limits.NewAdmission(admissionConfig(s), time.Now())
}

// admissionConfig is the admission budget the config asks for; a reload
// applies it to the running budget with limits.Admission.Reconfigure.
func admissionConfig(s *config.Security) limits.AdmissionConfig {
	return limits.AdmissionConfig{
		SourceRate:  max(limits.SourceAdmissionRate, s.NewSessionsPerIP),
		SourceBurst: float64(max(limits.SourceAdmissionBurst, s.NewSessionsPerIPBurst, int(math.Ceil(s.NewSessionsPerIP)))),
	}
}

// mac1Key is the supervisor's mac1 key, or nil when no key is set.
func mac1Key(s *config.Security) *wgproto.MAC1Key {
	if s.UpstreamPublicKey.IsZero() {
		return nil
	}
	k := wgproto.NewMAC1Key(wgproto.PublicKey(s.UpstreamPublicKey))
	return &k
}
