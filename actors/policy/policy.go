// Package policy holds the per-client policy actors: the extension point
// where an operator decides who may use the relay and how much.
//
// For every client ID that would open a session, the supervisor spawns one
// policy actor (from a Factory) and asks it once, with AdmitSession, whether
// the session may open. The policy answers the sender with SessionAdmitted
// or SessionRefused, made by AdmitSession.Admit and Refuse so that they
// carry the admission's Ticket (plain clients' admissions, which all have
// the zero client ID, are told apart by it). It is never asked per
// datagram: what a policy decides about traffic it gives in its answer
// (SessionAdmitted.Limits) or pushes to the session later.
//
// A policy actor lives as long as it has something to do. Most answer once
// and are done: the supervisor stops them as soon as they have answered.
// What an admission holds beyond that (the Caps policy's place in the
// relay's caps) comes back to the supervisor as SessionAdmitted.Release,
// which it calls on its one "session ended" path. A policy that wants to
// decide more later (push ApplyLimits, say) answers with Stay: it is told
// SessionStarted and stopped only when the session ends.
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
//   - ClientRate admits everyone with a per-client rate limit, which the
//     session enforces from its first datagram.
//   - Chain combines them. Put the allow-lists first and Caps after them,
//     so that a refused attempt spends none of its source's rate.
//
// The built-in policies never wait for anything, so they run inline
// (actors/mailbox.Inline): on the goroutine that asks them, which is the
// supervisor's, with no goroutine woken and no message waiting for one.
// Their props are made once and shared by every client's actor.
//
// Refusals carry a stable reason (messages.Refused*) for logs and metrics.
package policy

import (
	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/mailbox"
	"github.com/udpfwd/udpfwd/actors/messages"
)

// Factory returns the props of the policy actor for one client. The
// supervisor calls it in its own goroutine, once per admission. An
// operator's own policy runs on protoactor's default dispatcher unless its
// props say otherwise: one that may wait (asking something outside the
// relay) must not run inline.
//
// The supervisor never restarts a policy actor: one that fails is stopped
// and its admission dropped (counted as policy_refused). A Chain does the
// same with a failed member: it fails itself.
type Factory func() *actor.Props

// inline returns the props of a built-in policy: it runs inline on the
// goroutine that asks it, with an allocation-free mailbox.
func inline(producer actor.Producer, opts ...actor.PropsOption) *actor.Props {
	opts = append([]actor.PropsOption{actor.WithMailbox(mailbox.Unbounded()), actor.WithDispatcher(mailbox.Inline())}, opts...)
	return actor.PropsFromProducer(producer, opts...)
}

// inlineFunc is inline for a policy without state.
func inlineFunc(f actor.ReceiveFunc) *actor.Props {
	return actor.PropsFromFunc(f, actor.WithMailbox(mailbox.Unbounded()), actor.WithDispatcher(mailbox.Inline()))
}

var allowAll = inlineFunc(func(ctx actor.Context) {
	if m, ok := ctx.Message().(*messages.AdmitSession); ok {
		ctx.Respond(m.Admit())
	}
})

// AllowAll is the default policy: every session is admitted.
func AllowAll() *actor.Props { return allowAll }
