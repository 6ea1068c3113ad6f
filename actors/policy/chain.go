package policy

import (
	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/messages"
)

// Chain combines policies: a session is admitted only if every one of them
// admits it, asked in order; the first refusal answers. Each policy runs as
// a child actor of the chain, spawned when its turn comes and stopped once
// it has answered, unless it stays (SessionAdmitted.Stay): then the chain
// stays too, and hands on to those that stay whatever it is sent later
// (SessionStarted, pushed settings). The chain's answer carries the limits
// of the last policy that gave any, and one Release for everything the
// policies hold; a refusal, or the chain stopped before it answered, gives
// back what the policies before it hold.
//
// A policy in the chain that fails makes the chain fail (it is not
// restarted): the supervisor drops the admission as it would for a policy
// of its own.
func Chain(factories ...Factory) Factory {
	if len(factories) == 0 {
		return AllowAll
	}
	if len(factories) == 1 {
		return factories[0]
	}
	fs := append([]Factory(nil), factories...)
	props := inline(func() actor.Actor { return &chain{factories: fs} }, actor.WithSupervisor(escalate))
	return func() *actor.Props { return props }
}

// escalate makes a chain fail with the member that failed.
var escalate = actor.NewOneForOneStrategy(0, 0, func(any) actor.Directive { return actor.EscalateDirective })

type chain struct {
	factories []Factory
	asker     *actor.PID
	ask       *messages.AdmitSession
	next      int
	current   *actor.PID   // the member asked now
	staying   []*actor.PID // members that stay with the session
	answer    messages.SessionAdmitted
	releases  []func()
	answered  bool
}

func (c *chain) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.AdmitSession:
		c.asker, c.ask, c.next = ctx.Sender(), m, 0
		c.answer = *m.Admit()
		c.askNext(ctx)
	case *messages.SessionAdmitted:
		if c.current == nil {
			return // not an answer to this chain's question
		}
		if m.Stay {
			c.staying = append(c.staying, c.current)
			c.answer.Stay = true
		} else {
			ctx.Stop(c.current)
		}
		c.current = nil
		if m.Limits != nil {
			c.answer.Limits = m.Limits
		}
		if m.Release != nil {
			c.releases = append(c.releases, m.Release)
		}
		if c.next < len(c.factories) {
			c.askNext(ctx)
			return
		}
		c.answered = true
		c.answer.Release = releaseAll(c.releases)
		c.releases = nil
		answer := c.answer
		ctx.Send(c.asker, &answer)
	case *messages.SessionRefused:
		if c.current == nil {
			return
		}
		c.current = nil
		c.answered = true
		c.giveBack()
		ctx.Send(c.asker, m)
	case *actor.Stopping:
		if !c.answered {
			c.giveBack()
		}
	default:
		// Anything else (pushed settings, the session started) is for the
		// members that stay.
		if _, system := m.(actor.SystemMessage); !system {
			if _, auto := m.(actor.AutoReceiveMessage); !auto {
				for _, pid := range c.staying {
					ctx.Forward(pid)
				}
			}
		}
	}
}

func (c *chain) askNext(ctx actor.Context) {
	c.current = ctx.Spawn(c.factories[c.next]())
	c.next++
	ctx.Request(c.current, c.ask)
}

// giveBack releases what the members asked so far hold.
func (c *chain) giveBack() {
	for _, r := range c.releases {
		r()
	}
	c.releases = nil
}

// releaseAll is one Release for rs.
func releaseAll(rs []func()) func() {
	switch len(rs) {
	case 0:
		return nil
	case 1:
		return rs[0]
	}
	return func() {
		for _, r := range rs {
			r()
		}
	}
}
