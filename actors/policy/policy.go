// Package policy holds the per-client policy actors: the extension point
// where an operator decides who may use the relay and how much.
//
// For every client ID that would open a session, the supervisor spawns one
// policy actor (from a Factory) and asks it once, with AdmitSession, whether
// the session may open. The policy answers the sender with SessionAdmitted
// or SessionRefused, made by AdmitSession.Admit and Refuse so that they
// carry the admission's Ticket (plain clients' admissions, which all have
// the zero client ID, are told apart by it). It is never asked per datagram: a policy that limits
// traffic pushes its decisions to the session instead. The supervisor stops
// the policy actor when the session ends or is refused.
//
// Adding a policy means adding one actor kind that answers AdmitSession,
// and listing its Factory in the relay's configuration.
//
// The kinds here:
//   - AllowAll admits everyone (the default).
//   - ClientIDs and Sources are the allow-lists: by client ID, and by source
//     CIDR with a deny list.
//   - Caps and CapsShared hold the relay's session caps and each source's
//     rate of new sessions, in state shared by every client's actor.
//   - ClientRate admits everyone and pushes a per-client rate limit to the
//     session (ApplyLimits) once told it started (SessionStarted).
//   - Chain combines them. Put the allow-lists first and Caps after them,
//     so that a refused attempt spends none of its source's rate.
//
// Refusals carry a stable reason (messages.Refused*) for logs and metrics.
package policy

import (
	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/messages"
)

// Factory returns the props of the policy actor for one client. The
// supervisor calls it in its own goroutine. Policy actors run on
// protoactor's default dispatcher.
//
// The supervisor never restarts a policy actor: one that fails is stopped
// and its admission dropped (counted as policy_refused). Inside a Chain, a
// failed policy is restarted by the chain (protoactor's default), so a
// policy that holds something for its session, as Caps holds a place, gives
// it back on Restarting as on Stopping.
type Factory func() *actor.Props

// AllowAll is the default policy: every session is admitted.
func AllowAll() *actor.Props {
	return actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*messages.AdmitSession); ok {
			ctx.Respond(m.Admit())
		}
	})
}

// Chain combines policies: a session is admitted only if every one of them
// admits it, asked in order; the first refusal answers. Each policy runs as
// a child actor of the chain, so it lives exactly as long as the session's
// policy does.
func Chain(factories ...Factory) Factory {
	if len(factories) == 0 {
		return AllowAll
	}
	if len(factories) == 1 {
		return factories[0]
	}
	return func() *actor.Props {
		return actor.PropsFromProducer(func() actor.Actor { return &chain{factories: factories} })
	}
}

type chain struct {
	factories []Factory
	children  []*actor.PID
	asker     *actor.PID
	ask       *messages.AdmitSession
	next      int
}

func (c *chain) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		for _, f := range c.factories {
			c.children = append(c.children, ctx.Spawn(f()))
		}
	case *messages.AdmitSession:
		c.asker, c.ask, c.next = ctx.Sender(), m, 0
		c.askNext(ctx)
	case *messages.SessionAdmitted:
		if c.next == len(c.children) {
			ctx.Send(c.asker, m)
			return
		}
		c.askNext(ctx)
	case *messages.SessionRefused:
		ctx.Send(c.asker, m)
	default:
		// Anything else (pushed configuration, session started) is for
		// every policy in the chain.
		if _, system := m.(actor.SystemMessage); !system {
			if _, auto := m.(actor.AutoReceiveMessage); !auto {
				for _, pid := range c.children {
					ctx.Forward(pid)
				}
			}
		}
	}
}

func (c *chain) askNext(ctx actor.Context) {
	pid := c.children[c.next]
	c.next++
	ctx.Request(pid, c.ask)
}
