package policy

import (
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
//
// An admitted session holds its place from the moment the policy admits it
// until the supervisor calls the answer's Release: when the session ends,
// or at once if it never opens. The actor itself holds nothing and is done
// once it has answered.
func CapsShared(caps *limits.Caps) Factory {
	props := inlineFunc(func(ctx actor.Context) {
		m, ok := ctx.Message().(*messages.AdmitSession)
		if !ok {
			return
		}
		from := m.From.Addr()
		if reason, ok := caps.Admit(from, time.Now()); !ok {
			ctx.Respond(m.Refuse(reason))
			return
		}
		a := m.Admit()
		a.Release = func() { caps.Release(from) }
		ctx.Respond(a)
	})
	return func() *actor.Props { return props }
}
