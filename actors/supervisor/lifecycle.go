package supervisor

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/session"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// newSession describes a session to spawn.
type newSession struct {
	key      key              // its place in sessions
	client   wgproto.ClientID // zero for a plain client (and forward mode)
	from     netip.AddrPort   // the client's address
	listener uint8            // the index of the listening socket it came by
	conn     *udpio.Conn      // its upstream socket, bound and connected
	endpoint int              // the index of the upstream endpoint conn is connected to
	idle     time.Duration
	policy   *actor.PID                // the policy actor that stays with it (SessionAdmitted.Stay), or nil
	release  func()                    // gives back what its admission holds, or nil
	limits   *messages.ApplyLimits     // the client's rate limit to start with, or nil
	forward  bool                      // forward mode: no WireGuard parsing
	id       uuid.UUID                 // zero: a new one
	created  time.Time                 // zero: now
	roam     []byte                    // saved roaming state, if restored
	restore  *messages.SessionRestored // published instead of SessionOpened
}

// openForward starts forward mode's one session on its pre-bound socket.
func (s *Supervisor) openForward(ctx actor.Context) {
	s.spawn(ctx, newSession{key: idKey(wgproto.ClientID{}), conn: s.cfg.ForwardConn, forward: true})
}

// spawn starts a session and enters it in the tables. The counters move
// before the event (SessionOpened, or SessionRestored) is published, so
// that whoever waits for the event finds them moved.
func (s *Supervisor) spawn(ctx actor.Context, n newSession) *entry {
	now := time.Now()
	if n.id == (uuid.UUID{}) {
		n.id = uuid.New()
	}
	if n.created.IsZero() {
		n.created = now
	}
	client, from, conn := n.client, n.from, n.conn
	info := messages.SessionInfo{
		Relay:         s.cfg.Relay,
		Session:       n.id,
		Client:        client,
		ClientAddr:    from,
		UpstreamLocal: conn.LocalAddr(),
		Upstream:      conn.RemoteAddr(),
	}
	if !n.forward {
		info.Endpoint = s.pool.Name(n.endpoint)
		s.pool.AddSessions(n.endpoint, 1)
	}
	st := stats.NewSession(n.created, now, from)
	var lim *limits.Limits
	if n.limits != nil {
		l := n.limits.Limits()
		lim = &l
	}
	cfg := session.Config{
		Stats:       st,
		Info:        info,
		Handle:      uint32(n.key),
		Conn:        conn,
		Writers:     s.cfg.Writers,
		Listener:    n.listener,
		IdleTimeout: n.idle,
		Forward:     n.forward,
		Roam:        n.roam,
		Limits:      lim,
		Failover:    s.cfg.FailoverAfter,
		Poller:      s.cfg.Poller,
		Counters:    s.cfg.Counters,
		Status:      s.cfg.Status,
		Logger:      s.cfg.Logger, // the session adds its fields itself, line by line
		Cluster:     s.sessionCluster(client, n.key.isPlain(), n.forward),
	}
	name := "session-" + client.String() + "-"
	if n.key.isPlain() {
		cfg.Tracked, cfg.Stamp, name = true, s.cfg.Clients.Stamp, "session-plain-"
	}
	pid := s.spawner.Spawn(ctx, cfg, name)
	e := &entry{key: n.key, pid: pid, policy: n.policy, release: n.release, info: info, stats: st, forward: n.forward}
	s.enter(e)
	if e.forward {
		return e // a forward is no session: no count, no event (the relay logs "forward started")
	}
	s.cfg.Counters.SetLive(len(s.sessions))
	s.register(e)
	if e.policy != nil {
		ctx.Send(e.policy, &messages.SessionStarted{Session: e.pid})
	}
	if n.restore != nil {
		n.restore.SessionInfo = info
		ctx.ActorSystem().EventStream.Publish(n.restore)
		return e
	}
	s.cfg.Counters.Count(stats.SessionOpened)
	ctx.ActorSystem().EventStream.Publish(&messages.SessionOpened{SessionInfo: info})
	return e
}

// enter enters a new session in the tables routing uses: by its key, by its
// actor, and for a plain client by its address (plain.go).
func (s *Supervisor) enter(e *entry) {
	if e.key.isPlain() {
		e.plain = &plainSession{}
		s.plain.confirm(e, e.info.ClientAddr)
	}
	s.sessions[e.key] = e
	s.byPID[e.pid.Id] = e
}

// ending is what ending a session needs from whoever ends it.
type ending struct {
	// stopSession and stopPolicy stop the session's actor and its policy
	// actor; nil where that is done already, or protoactor will do it.
	stopSession, stopPolicy func(*actor.PID)
	events                  *eventstream.EventStream
}

// end is the one "session ended" path, for idle expiry, termination,
// failure and stopping alike. It forgets the session (nothing more is
// routed to it and it no longer counts as live), stops its actor and the
// policy actor that stayed with it, gives back what its admission holds
// (its place in the caps: SessionAdmitted.Release), counts why it ended,
// and only then publishes the event made by event, so that whoever waits
// for the event finds the counters moved. It reports false, doing nothing,
// if the session had ended already (an expiring session that then fails,
// say). The entry stays in byPID until the actor has terminated.
func (s *Supervisor) end(how ending, e *entry, why stats.Event, event func(messages.SessionInfo) any) bool {
	if s.sessions[e.key] != e {
		return false
	}
	delete(s.sessions, e.key)
	s.unregister(e)
	if e.plain != nil {
		s.plain.forget(e)
	}
	if !e.forward {
		s.cfg.Counters.SetLive(len(s.sessions))
		if i := s.pool.Index(e.info.Endpoint); i >= 0 {
			s.pool.AddSessions(i, -1)
		}
		s.publishEndpoints()
	}
	if how.stopSession != nil {
		how.stopSession(e.pid)
	}
	if e.policy != nil && how.stopPolicy != nil {
		how.stopPolicy(e.policy)
	}
	if e.release != nil {
		e.release()
		e.release = nil
	}
	if e.forward {
		if f, ok := event(e.info).(*messages.SessionFailed); ok {
			s.cfg.Logger.Error("forward failed: the relay forwards nothing until it is started again", zap.String("reason", f.Reason))
		}
		return true
	}
	s.cfg.Counters.Count(why)
	info := e.info
	info.ClientAddr = e.stats.ClientAddr()
	how.events.Publish(event(info))
	return true
}

// idle ends a session whose timer fired. Forgetting the client ID first
// means nothing more is routed to it; Poison lets it forward what is
// already queued before it stops.
func (s *Supervisor) idle(ctx actor.Context, m *messages.SessionIdle) {
	k := key(m.Handle)
	if m.Handle == 0 {
		k = idKey(m.Session.Client) // sent by hand, without a handle
	}
	e := s.sessions[k]
	if e == nil || e.info.Session != m.Session.Session {
		return
	}
	how := ending{stopSession: ctx.Poison, stopPolicy: ctx.Stop, events: ctx.ActorSystem().EventStream}
	s.end(how, e, stats.SessionExpired, func(info messages.SessionInfo) any {
		return &messages.SessionExpired{SessionInfo: info, Side: m.Side, Timeout: s.cfg.IdleTimeout}
	})
}

// terminated handles a child that stopped. A session that stopped while
// still live was stopped from outside: it ends as closed.
func (s *Supervisor) terminated(ctx actor.Context, who *actor.PID) {
	e := s.byPID[who.Id]
	if e == nil {
		return // a policy actor
	}
	delete(s.byPID, who.Id)
	dropHandover(e)
	s.end(ending{stopPolicy: ctx.Stop, events: ctx.ActorSystem().EventStream}, e, stats.SessionClosed, closed)
}

// closed makes the event of a session closed by a stop.
func closed(info messages.SessionInfo) any { return &messages.SessionClosed{SessionInfo: info} }

// HandleFailure is called in the supervisor's goroutine when a child
// panics. A failed session is stopped, never restarted: its socket is
// closed and a new session would have a new port anyway. Every other
// session is untouched. A failed policy actor is stopped too, and its
// admission dropped.
func (s *Supervisor) HandleFailure(system *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, _ *actor.RestartStatistics, reason, _ any) {
	sup.StopChildren(child)
	e := s.byPID[child.Id]
	if e == nil {
		s.cfg.Logger.Error("policy actor failed", zap.Stringer("pid", child), zap.Any("reason", reason))
		s.policyFailed(child)
		return
	}
	how := ending{stopPolicy: func(pid *actor.PID) { sup.StopChildren(pid) }, events: system.EventStream}
	s.end(how, e, stats.SessionFailed, func(info messages.SessionInfo) any {
		return &messages.SessionFailed{SessionInfo: info, Reason: fmt.Sprint(reason)}
	})
}

// stopping runs before protoactor stops the children: every admission
// still waiting is dropped, and every session still open ends as closed.
// protoactor stops every child after this, sessions and policies alike:
// stopping them here too would send a second Stop to a dead actor.
func (s *Supervisor) stopping(ctx actor.Context) {
	s.closeSpares()
	for id, l := range s.cl.lookups {
		s.cl.held -= len(l.held.Datagrams)
		l.held.Release()
		delete(s.cl.lookups, id)
	}
	for k, p := range s.pending {
		s.dropAdmission(k, p, stats.SessionGone, nil)
	}
	how := ending{events: ctx.ActorSystem().EventStream}
	for _, e := range s.sessions {
		s.end(how, e, stats.SessionClosed, closed)
	}
}

// closeSpares closes the supervisor's spare sockets if they are its own; a
// relay's shared ones outlive any one of its supervisors.
func (s *Supervisor) closeSpares() {
	if s.ownSpares {
		s.spares.Close()
	}
}
