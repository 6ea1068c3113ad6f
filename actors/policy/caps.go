package policy

import (
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/time/rate"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/limits"
)

// Caps admits sessions within the relay's caps (--max-sessions,
// --max-sessions-per-ip, --new-sessions-per-ip): at most maxSessions in all
// and maxPerIP per source, and new sessions from one source at most at
// perIPRate with bursts of perIPBurst. Zero means unlimited. Over a cap the
// session is refused with the cap's reason (messages.RefusedMaxSessions,
// RefusedMaxSessionsPerIP, RefusedNewSessionRate); live sessions are never
// evicted to make room. The state is created here, once, and shared by
// every client's actor; see CapsShared.
func Caps(maxSessions, maxPerIP int, perIPRate rate.Limit, perIPBurst int) Factory {
	return CapsShared(limits.NewCaps(limits.CapsConfig{
		MaxSessions:  maxSessions,
		MaxPerSource: maxPerIP,
		SourceRate:   perIPRate,
		SourceBurst:  perIPBurst,
	}))
}

// CapsShared is Caps on caps the caller made (to set the IPv6 prefix or the
// limiter table's bound, or to read the counts). Use one *limits.Caps per
// relay: every actor the Factory makes counts against it.
func CapsShared(caps *limits.Caps) Factory {
	return func() *actor.Props {
		return actor.PropsFromProducer(func() actor.Actor { return &capsPolicy{caps: caps} })
	}
}

// capsPolicy holds one session's place in the caps from the moment it
// admits it until the supervisor stops it (the session ended, or a later
// policy in a chain refused it, or it never opened).
type capsPolicy struct {
	caps     *limits.Caps
	admitted bool
	from     netip.Addr
}

func (p *capsPolicy) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.AdmitSession:
		if p.admitted { // asked again: the place is already held
			ctx.Respond(m.Admit())
			return
		}
		reason, ok := p.caps.Admit(m.From.Addr(), time.Now())
		if !ok {
			ctx.Respond(m.Refuse(reason))
			return
		}
		p.admitted, p.from = true, m.From.Addr()
		ctx.Respond(m.Admit())
	case *actor.Stopping, *actor.Restarting:
		if p.admitted {
			p.caps.Release(p.from)
			p.admitted = false
		}
	}
}
