package policy

import (
	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// ClientRate holds every client to a rate limit (--client-rate): def, or
// perClient[id] for the IDs listed there. It admits every session with the
// limit in its answer (SessionAdmitted.Limits), so that the session
// enforces it per datagram from its first one, with a limits.Limiter; the
// policy is never asked per datagram and has nothing to do afterwards. A
// client whose limit is unlimited gets none. A reload that changes the
// limit pushes it to the live sessions itself (messages.ApplySettings).
func ClientRate(def limits.Limits, perClient map[wgproto.ClientID]limits.Limits) Factory {
	per := make(map[wgproto.ClientID]*messages.ApplyLimits, len(perClient))
	for id, l := range perClient {
		per[id] = limitsOf(l)
	}
	deflt := limitsOf(def)
	props := inlineFunc(func(ctx actor.Context) {
		m, ok := ctx.Message().(*messages.AdmitSession)
		if !ok {
			return
		}
		l, listed := per[m.Client]
		if !listed {
			l = deflt
		}
		a := m.Admit()
		a.Limits = l
		ctx.Respond(a)
	})
	return func() *actor.Props { return props }
}

// limitsOf is l as an answer carries it: nil if unlimited. Answers share
// it; nobody changes it.
func limitsOf(l limits.Limits) *messages.ApplyLimits {
	if l.Unlimited() {
		return nil
	}
	m := messages.ApplyLimits(l)
	return &m
}
