package supervisor

import (
	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/messages"
)

// respondList answers ListSessions with every live session. In its own
// turn the supervisor only copies its live entries (a pointer each); the
// list is built, a microsecond or more per session, on a goroutine of its
// own, so that listing thousands of sessions (the admin listener's
// snapshot, the state file's) never holds up routing. An entry's info
// never changes after spawn, and its stats are safe for concurrent use.
func (s *Supervisor) respondList(ctx actor.Context) {
	sender := ctx.Sender()
	if sender == nil {
		return // sent, not asked: nobody to answer
	}
	entries := make([]*entry, 0, len(s.sessions))
	for _, e := range s.sessions {
		entries = append(entries, e)
	}
	relay, root := s.cfg.Relay, ctx.ActorSystem().Root
	go func() { root.Send(sender, list(relay, entries)) }()
}

// list reports the sessions of entries.
func list(relay string, entries []*entry) *messages.SessionList {
	l := &messages.SessionList{Relay: relay, Sessions: make([]messages.SessionStatus, 0, len(entries))}
	for _, e := range entries {
		st := messages.SessionStatus{SessionInfo: e.info, Stats: e.stats.Snapshot(), Roam: e.stats.Saved()}
		st.ClientAddr = st.Stats.ClientAddr
		l.Sessions = append(l.Sessions, st)
	}
	return l
}
