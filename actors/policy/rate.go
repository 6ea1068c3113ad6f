package policy

import (
	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// ClientRate holds every client to a rate limit (--client-rate): def, or
// perClient[id] for the IDs listed there. It admits every session and,
// once told the session exists (messages.SessionStarted), pushes the limit
// to it with messages.ApplyLimits; the session enforces it per datagram
// with a limits.Limiter, so the policy is never asked per datagram. A
// client whose limit is unlimited gets no message.
func ClientRate(def limits.Limits, perClient map[wgproto.ClientID]limits.Limits) Factory {
	per := make(map[wgproto.ClientID]limits.Limits, len(perClient))
	for id, l := range perClient {
		per[id] = l
	}
	return func() *actor.Props {
		return actor.PropsFromProducer(func() actor.Actor { return &ratePolicy{def: def, per: per} })
	}
}

type ratePolicy struct {
	def    limits.Limits
	per    map[wgproto.ClientID]limits.Limits // shared, read-only
	client wgproto.ClientID
}

func (p *ratePolicy) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.AdmitSession:
		p.client = m.Client
		ctx.Respond(m.Admit())
	case *messages.SessionStarted:
		l, ok := p.per[p.client]
		if !ok {
			l = p.def
		}
		if m.Session == nil || l.Unlimited() {
			return
		}
		msg := messages.ApplyLimits(l)
		ctx.Send(m.Session, &msg)
	}
}
