package messages

import (
	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/internal/limits"
)

// SessionStarted tells a client's policy actor that stays with its session
// (SessionAdmitted.Stay) that the session exists, and where it is, so that
// the policy can push decisions to it (ApplyLimits) instead of being asked
// per datagram. The supervisor sends it once, right after spawning the
// session.
type SessionStarted struct {
	Session *actor.PID
}

// ApplyLimits tells a session the rate limit its client is held to, each
// direction separately: a policy that stays sends it after SessionStarted,
// and a reload sends it to every live session (ApplySettings). A policy
// that knows the limit when it admits the session gives it in its answer
// (SessionAdmitted.Limits) instead. Zero rates mean unlimited; zero bursts mean
// one second's worth (see limits.Limits). The fields are those of
// limits.Limits, so the session converts it with Limits.
type ApplyLimits struct {
	DatagramsPerSecond float64
	BytesPerSecond     float64
	DatagramBurst      int
	ByteBurst          int
}

// Limits returns the limits to enforce with a limits.Limiter.
func (m *ApplyLimits) Limits() limits.Limits { return limits.Limits(*m) }

// The reasons the relay's own policies give in SessionRefused.Reason. They
// are stable: they become log fields and metric label values.
const (
	RefusedClientNotAllowed = "client_not_allowed"          // not on the client ID allow-list
	RefusedSourceDenied     = "source_denied"               // source address in a deny CIDR
	RefusedSourceNotAllowed = "source_not_allowed"          // source address in no allow CIDR
	RefusedMaxSessions      = limits.ReasonMaxSessions      // the relay holds its maximum of sessions
	RefusedMaxSessionsPerIP = limits.ReasonMaxSessionsPerIP // the source holds its maximum
	RefusedNewSessionRate   = limits.ReasonNewSessionRate   // the source opens sessions too fast
)
