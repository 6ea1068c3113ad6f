// Package supervisor is the session-supervisor actor: it routes every
// datagram a listener reads to the session of its client ID, opens sessions
// (after asking the client's policy actor), and supervises them so that a
// session that fails ends alone.
//
// Routing is the relay's one shared step, so it is kept cheap: one header
// parse and one map lookup per datagram, and one message per session per
// read batch.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/mailbox"
	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/actors/session"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Mode says how datagrams are grouped into sessions.
type Mode int

// The relay's modes.
const (
	// WireGuard groups datagrams by WARP client ID: one session, and one
	// upstream port, per client ID.
	WireGuard Mode = iota
	// Forward sends every datagram through one session with a pre-bound
	// upstream socket (static port-to-port forwarding).
	Forward
)

// pendingTimeout is how long an admission may wait for its policy's answer
// before another initiation from the client may ask again. Policies answer
// in microseconds; this only guards against one that never does.
const pendingTimeout = 5 * time.Second

// Config is what a supervisor needs.
type Config struct {
	Relay string
	Mode  Mode
	// Upstream is the upstream address (WireGuard mode); it may be the zero
	// value until the first UpstreamResolved message.
	Upstream netip.AddrPort
	// UpstreamBind is the local address upstream sockets bind to; the zero
	// value lets the kernel choose address and port.
	UpstreamBind netip.AddrPort
	// UpstreamPorts, if not zero, is the inclusive range of local ports
	// upstream sockets bind in.
	UpstreamPorts [2]uint16
	// ForwardConn is the pre-bound upstream socket of Forward mode.
	ForwardConn *udpio.Conn
	// Writers send replies to clients, one per listening socket, indexed
	// by udpio.Batch.Via.
	Writers       []*actor.PID
	IdleTimeout   time.Duration
	Policy        policy.Factory // nil means policy.AllowAll
	SocketOptions udpio.Options
	Counters      *stats.Counters
	Logger        *zap.Logger
	// Readers counts the sessions' reader goroutines.
	Readers *sync.WaitGroup
	// MAC1, if set, is the upstream's mac1 key: a handshake initiation is
	// forwarded only if its mac1 is valid for it (computed with the client
	// ID zeroed), so junk cannot open sessions or reach the upstream.
	MAC1 *wgproto.MAC1Key
}

// Validate reports a configuration the supervisor cannot run with.
func (c *Config) Validate() error {
	switch {
	case len(c.Writers) == 0:
		return errors.New("supervisor: no writer")
	case c.Counters == nil:
		return errors.New("supervisor: no counters")
	case c.Logger == nil:
		return errors.New("supervisor: no logger")
	case c.Mode == Forward && c.ForwardConn == nil:
		return errors.New("supervisor: forward mode without an upstream socket")
	case c.Mode == WireGuard && c.IdleTimeout <= 0:
		return errors.New("supervisor: idle timeout must be positive")
	}
	return nil
}

// Props returns the props of a supervisor actor.
func Props(cfg Config) *actor.Props {
	if cfg.Policy == nil {
		cfg.Policy = policy.AllowAll
	}
	return actor.PropsFromProducer(func() actor.Actor { return newSupervisor(cfg) },
		actor.WithMailbox(mailbox.Unbounded()), actor.WithDispatcher(mailbox.Inline()))
}

// entry is the supervisor's record of one live session.
type entry struct {
	pid      *actor.PID
	policy   *actor.PID
	info     messages.SessionInfo
	openedBy netip.Addr   // the client IP that opened it, for per-IP counts
	out      *udpio.Batch // datagrams being routed to it in this batch
	stats    *stats.Session
}

// pending is an admission waiting for its policy's answer. It holds the
// handshake initiation that asked, to forward once admitted.
type pending struct {
	first   udpio.Datagram
	restore *messages.RestoredSession // a saved session to re-open, instead of first
	via     uint8
	policy  *actor.PID
	since   time.Time
}

// Supervisor is the actor. It implements actor.SupervisorStrategy itself,
// so that it learns which session failed and why.
type Supervisor struct {
	cfg      Config
	upstream netip.AddrPort
	sessions map[wgproto.ClientID]*entry
	byPID    map[string]*entry // by pid.Id, for Terminated and failures
	pending  map[wgproto.ClientID]*pending
	perIP    map[netip.Addr]int
	touched  []*entry
	drops    [stats.NumReasons]int
	mac1     *wgproto.MAC1Checker
}

func newSupervisor(cfg Config) *Supervisor {
	var mac1 *wgproto.MAC1Checker
	if cfg.MAC1 != nil {
		mac1 = wgproto.NewMAC1Checker(*cfg.MAC1)
	}
	return &Supervisor{
		mac1:     mac1,
		cfg:      cfg,
		upstream: cfg.Upstream,
		sessions: make(map[wgproto.ClientID]*entry),
		byPID:    make(map[string]*entry),
		pending:  make(map[wgproto.ClientID]*pending),
		perIP:    make(map[netip.Addr]int),
	}
}

// Receive handles one message.
func (s *Supervisor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.ClientDatagrams:
		s.route(ctx, m.Batch())
	case *messages.SessionAdmitted:
		s.admitted(ctx, m.Client)
	case *messages.SessionRefused:
		s.refused(ctx, m)
	case *messages.SessionIdle:
		s.idle(ctx, m)
	case *messages.UpstreamResolved:
		if s.upstream.IsValid() && m.Addr != s.upstream {
			s.cfg.Counters.Count(stats.UpstreamChanged)
		}
		s.upstream = m.Addr
	case *messages.RestoreSessions:
		s.restore(ctx, m.Sessions)
	case *messages.ListSessions:
		ctx.Respond(s.list())
	case *messages.Crash:
		if e := s.sessions[m.Client]; e != nil {
			ctx.Send(e.pid, m)
		}
	case *actor.Terminated:
		s.terminated(ctx, m.Who)
	case *actor.Started:
		if s.cfg.Mode == Forward {
			s.openForward(ctx)
		}
	case *actor.Stopping:
		s.stopping(ctx)
	}
}

// routeContext is the part of actor.Context that routing uses, so that
// routing can be tested and measured without an actor system.
type routeContext interface {
	Send(pid *actor.PID, message any)
	Spawn(props *actor.Props) *actor.PID
	Request(pid *actor.PID, message any)
}

// route splits a read batch into one batch per session and sends each.
func (s *Supervisor) route(ctx routeContext, in *udpio.Batch) {
	if s.cfg.Mode == Forward {
		s.routeForward(ctx, in)
		return
	}
	for i := range in.D {
		d := &in.D[i]
		if d.Truncated {
			s.drops[stats.Oversize]++
			continue
		}
		h, v := wgproto.Parse(d.Bytes())
		if v != wgproto.OK {
			s.drops[verdictReason[v]]++
			continue
		}
		if h.Type == wgproto.TypeInitiation && s.mac1 != nil && !s.mac1.Valid(d.Bytes()) {
			s.drops[stats.BadMAC1]++
			continue
		}
		e := s.sessions[h.Client]
		if e == nil {
			if h.Type != wgproto.TypeInitiation {
				s.drops[stats.UnknownClient]++
				continue
			}
			s.admit(ctx, h.Client, d, in.Via)
			continue
		}
		if e.out == nil {
			e.out = udpio.GetBatch()
			e.out.Via = in.Via
			s.touched = append(s.touched, e)
		}
		e.out.Add(*d)
		d.Buf = nil // moved
		if e.out.Full() {
			ctx.Send(e.pid, (*messages.ClientDatagrams)(e.out))
			e.out = udpio.GetBatch()
			e.out.Via = in.Via
		}
	}
	s.flushDrops() // before the datagrams move on, so counts are never behind them
	for _, e := range s.touched {
		if e.out != nil {
			ctx.Send(e.pid, (*messages.ClientDatagrams)(e.out))
			e.out = nil
		}
	}
	clear(s.touched)
	s.touched = s.touched[:0]
	in.Release()
}

func (s *Supervisor) routeForward(ctx routeContext, in *udpio.Batch) {
	e := s.sessions[wgproto.ClientID{}]
	if e == nil { // the session has failed: forward mode has no other
		s.drops[stats.SessionGone] += len(in.D)
		in.Release()
		s.flushDrops()
		return
	}
	k := 0
	for i := range in.D {
		if in.D[i].Truncated {
			s.drops[stats.Oversize]++
			continue
		}
		in.D[i], in.D[k] = in.D[k], in.D[i]
		k++
	}
	in.D = in.D[:k]
	s.flushDrops()
	ctx.Send(e.pid, (*messages.ClientDatagrams)(in))
}

var verdictReason = [wgproto.NumVerdicts]stats.Reason{
	wgproto.BadType:    stats.BadType,
	wgproto.BadSize:    stats.BadSize,
	wgproto.ZeroClient: stats.ZeroClientID,
}

func (s *Supervisor) flushDrops() {
	for r, n := range s.drops {
		if n != 0 {
			s.cfg.Counters.Drop(stats.Reason(r), n)
			s.drops[r] = 0
		}
	}
}

// admit asks a new policy actor whether client may open a session, and
// keeps its initiation until the answer comes.
func (s *Supervisor) admit(ctx routeContext, client wgproto.ClientID, d *udpio.Datagram, via uint8) {
	if !s.upstream.IsValid() {
		s.drops[stats.UpstreamUnresolved]++
		return
	}
	if p := s.pending[client]; p != nil {
		if time.Since(p.since) < pendingTimeout {
			s.drops[stats.AdmissionPending]++
			return
		}
		s.cfg.Logger.Warn("policy did not answer; asking again", zap.Stringer("client", client))
		delete(s.pending, client)
		udpio.PutBuffer(p.first.Buf)
		ctx.Send(p.policy, &actor.PoisonPill{})
	}
	p := &pending{first: *d, via: via, since: time.Now()}
	d.Buf = nil // moved into the pending admission
	p.policy = ctx.Spawn(s.cfg.Policy())
	s.pending[client] = p
	ctx.Request(p.policy, &messages.AdmitSession{
		Client:     client,
		From:       p.first.Addr,
		Live:       len(s.sessions),
		LiveFromIP: s.perIP[p.first.Addr.Addr()],
	})
}

func (s *Supervisor) dropPending(ctx actor.Context, client wgproto.ClientID, p *pending) {
	delete(s.pending, client)
	udpio.PutBuffer(p.first.Buf) // nil for a restore: PutBuffer ignores it
	ctx.Stop(p.policy)
}

func (s *Supervisor) refused(ctx actor.Context, m *messages.SessionRefused) {
	p := s.pending[m.Client]
	if p == nil {
		return
	}
	reason, ok := refusalReason[m.Reason]
	if !ok {
		reason = stats.PolicyRefused
	}
	s.cfg.Counters.Drop(reason, 1)
	s.cfg.Logger.Debug("session refused", zap.Stringer("client", m.Client), zap.String("reason", m.Reason),
		zap.Bool("restored", p.restore != nil))
	s.dropPending(ctx, m.Client, p)
}

// refusalReason maps the relay's own policies' reasons to drop reasons.
var refusalReason = map[string]stats.Reason{
	messages.RefusedClientNotAllowed: stats.ClientNotAllowed,
	messages.RefusedSourceDenied:     stats.SourceNotAllowed,
	messages.RefusedSourceNotAllowed: stats.SourceNotAllowed,
	messages.RefusedMaxSessions:      stats.MaxSessions,
	messages.RefusedMaxSessionsPerIP: stats.MaxSessionsPerIP,
	messages.RefusedNewSessionRate:   stats.NewSessionRate,
}

func (s *Supervisor) admitted(ctx actor.Context, client wgproto.ClientID) {
	p := s.pending[client]
	if p == nil {
		return
	}
	delete(s.pending, client)
	if p.restore != nil {
		s.reopen(ctx, p)
		return
	}
	conn, err := s.dialUpstream()
	if err != nil {
		s.cfg.Counters.Drop(stats.UpstreamBindFailed, 1)
		s.cfg.Logger.Warn("open upstream socket", zap.Stringer("client", client), zap.Error(err))
		udpio.PutBuffer(p.first.Buf)
		ctx.Stop(p.policy)
		return
	}
	e := s.spawn(ctx, newSession{client: client, from: p.first.Addr, via: p.via, conn: conn, idle: s.cfg.IdleTimeout})
	e.policy = p.policy
	ctx.Send(e.policy, &messages.SessionStarted{Session: e.pid})
	b := udpio.GetBatch()
	b.Via = p.via
	b.Add(p.first)
	ctx.Send(e.pid, (*messages.ClientDatagrams)(b))
}

// dialUpstream opens a new session's socket to the current upstream.
func (s *Supervisor) dialUpstream() (*udpio.Conn, error) { return s.dial(s.upstream) }

// dial opens an upstream socket to up: on a port the kernel picks, or on a
// free port of the configured range, tried from a random place in it.
func (s *Supervisor) dial(up netip.AddrPort) (*udpio.Conn, error) {
	lo, hi := s.cfg.UpstreamPorts[0], s.cfg.UpstreamPorts[1]
	if lo == 0 {
		return udpio.Dial(context.Background(), s.cfg.UpstreamBind, up, s.cfg.SocketOptions)
	}
	addr := s.cfg.UpstreamBind.Addr()
	if !addr.IsValid() {
		addr = netip.IPv4Unspecified()
		if up.Addr().Is6() {
			addr = netip.IPv6Unspecified()
		}
	}
	n := int(hi) - int(lo) + 1
	start := rand.IntN(n)
	var err error
	for i := 0; i < n; i++ {
		port := lo + uint16((start+i)%n)
		var c *udpio.Conn
		c, err = udpio.Dial(context.Background(), netip.AddrPortFrom(addr, port), up, s.cfg.SocketOptions)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("no free port in %d-%d: %w", lo, hi, err)
}

// openForward starts forward mode's one session on its pre-bound socket.
func (s *Supervisor) openForward(ctx actor.Context) {
	s.spawn(ctx, newSession{conn: s.cfg.ForwardConn, raw: true})
}

// newSession describes a session to spawn.
type newSession struct {
	client  wgproto.ClientID
	from    netip.AddrPort // the client's address
	via     uint8          // the listening socket it came by
	conn    *udpio.Conn    // its upstream socket, bound and connected
	idle    time.Duration
	raw     bool                      // forward mode: no WireGuard parsing
	id      uuid.UUID                 // zero: a new one
	created time.Time                 // zero: now
	roam    []byte                    // saved roaming state, if restored
	restore *messages.SessionRestored // published instead of SessionOpened
}

func (s *Supervisor) spawn(ctx actor.Context, n newSession) *entry {
	if n.id == (uuid.UUID{}) {
		n.id = uuid.New()
	}
	if n.created.IsZero() {
		n.created = time.Now()
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
	st := stats.NewSession(n.created, from)
	pid := ctx.SpawnPrefix(session.Props(session.Config{
		Stats:       st,
		Info:        info,
		Conn:        conn,
		Writers:     s.cfg.Writers,
		Via:         n.via,
		IdleTimeout: n.idle,
		Raw:         n.raw,
		Roam:        n.roam,
		Readers:     s.cfg.Readers,
		Counters:    s.cfg.Counters,
		Logger: s.cfg.Logger.With(zap.String("session", info.Session.String()),
			zap.Stringer("client", client), zap.String("client_b64", client.Base64())),
	}), "session-"+client.String()+"-")
	e := &entry{pid: pid, info: info, openedBy: from.Addr(), stats: st}
	s.sessions[client] = e
	s.cfg.Counters.SetLive(len(s.sessions))
	s.byPID[pid.Id] = e
	s.perIP[e.openedBy]++
	if n.restore != nil {
		n.restore.SessionInfo = info
		ctx.ActorSystem().EventStream.Publish(n.restore)
		return e
	}
	s.cfg.Counters.Count(stats.SessionOpened)
	ctx.ActorSystem().EventStream.Publish(&messages.SessionOpened{SessionInfo: info})
	return e
}

// restore re-opens saved sessions. Each is admitted again by its client's
// policy, as a new one would be (the policies may have changed since it was
// saved), and then re-opened on its old upstream port if it can still be
// bound, else on a new one (reported as Rebound).
func (s *Supervisor) restore(ctx actor.Context, saved []messages.RestoredSession) {
	if s.cfg.Mode != WireGuard {
		return
	}
	for i := range saved {
		r := &saved[i]
		info := r.Info
		if _, taken := s.sessions[info.Client]; taken || info.Client.IsZero() || !info.Upstream.IsValid() {
			continue
		}
		if _, taken := s.pending[info.Client]; taken {
			continue
		}
		p := &pending{restore: r, since: time.Now()}
		p.policy = ctx.Spawn(s.cfg.Policy())
		s.pending[info.Client] = p
		ctx.Request(p.policy, &messages.AdmitSession{
			Client:     info.Client,
			From:       info.ClientAddr,
			Live:       len(s.sessions) + len(s.pending) - 1,
			LiveFromIP: s.perIP[info.ClientAddr.Addr()],
		})
	}
}

// reopen opens an admitted saved session.
func (s *Supervisor) reopen(ctx actor.Context, p *pending) {
	r := p.restore
	info := r.Info
	ev := &messages.SessionRestored{Wanted: info.UpstreamLocal}
	var conn *udpio.Conn
	err := errors.New(r.Rebind) // the saved port is not allowed any more
	if r.Rebind == "" {
		conn, err = udpio.Dial(context.Background(), info.UpstreamLocal, info.Upstream, s.cfg.SocketOptions)
	}
	if err != nil {
		ev.Rebound, ev.Err = true, err.Error()
		conn, err = s.dial(info.Upstream)
		if err != nil {
			s.cfg.Counters.Drop(stats.UpstreamBindFailed, 1)
			s.cfg.Logger.Warn("restore session: open upstream socket", zap.Stringer("client", info.Client), zap.Error(err))
			ctx.Stop(p.policy)
			return
		}
	}
	e := s.spawn(ctx, newSession{
		client: info.Client, from: info.ClientAddr, conn: conn, idle: s.cfg.IdleTimeout,
		id: info.Session, created: r.Created, roam: r.Roam, restore: ev,
	})
	e.policy = p.policy
	ctx.Send(e.policy, &messages.SessionStarted{Session: e.pid})
}

// remove forgets a session and stops its policy actor; it reports false if
// the session was already forgotten.
func (s *Supervisor) remove(stop func(pids ...*actor.PID), e *entry) bool {
	if s.sessions[e.info.Client] != e {
		return false
	}
	delete(s.sessions, e.info.Client)
	s.cfg.Counters.SetLive(len(s.sessions))
	if s.perIP[e.openedBy]--; s.perIP[e.openedBy] <= 0 {
		delete(s.perIP, e.openedBy)
	}
	if e.policy != nil {
		stop(e.policy)
	}
	return true
}

// stopWith adapts ctx.Stop to remove's stop function.
func stopWith(ctx actor.Context) func(pids ...*actor.PID) {
	return func(pids ...*actor.PID) {
		for _, pid := range pids {
			ctx.Stop(pid)
		}
	}
}

// idle ends a session whose timer fired. Forgetting the client ID first
// means nothing more is routed to it; Poison lets it forward what is
// already queued before it stops.
func (s *Supervisor) idle(ctx actor.Context, m *messages.SessionIdle) {
	e := s.sessions[m.Session.Client]
	if e == nil || e.info.Session != m.Session.Session {
		return
	}
	s.remove(stopWith(ctx), e)
	ctx.Poison(e.pid)
	s.cfg.Counters.Count(stats.SessionExpired)
	ctx.ActorSystem().EventStream.Publish(&messages.SessionExpired{SessionInfo: m.Session, Side: m.Side, Timeout: s.cfg.IdleTimeout})
}

func (s *Supervisor) terminated(ctx actor.Context, who *actor.PID) {
	e := s.byPID[who.Id]
	if e == nil {
		return // a policy actor
	}
	delete(s.byPID, who.Id)
	if s.remove(stopWith(ctx), e) {
		// Not expired and not failed: stopped from outside.
		info := e.info
		info.ClientAddr = e.stats.ClientAddr()
		s.cfg.Counters.Count(stats.SessionClosed)
		ctx.ActorSystem().EventStream.Publish(&messages.SessionClosed{SessionInfo: info})
	}
}

// HandleFailure is called in the supervisor's goroutine when a child
// panics. A failed session is stopped, never restarted: its socket is
// closed and a new session would have a new port anyway. Every other
// session is untouched.
func (s *Supervisor) HandleFailure(system *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, _ *actor.RestartStatistics, reason, _ any) {
	sup.StopChildren(child)
	e := s.byPID[child.Id]
	if e == nil {
		s.cfg.Logger.Error("policy actor failed", zap.Stringer("pid", child), zap.Any("reason", reason))
		for client, p := range s.pending {
			if p.policy.Id == child.Id {
				delete(s.pending, client)
				udpio.PutBuffer(p.first.Buf)
				s.cfg.Counters.Drop(stats.PolicyRefused, 1)
			}
		}
		return
	}
	if s.remove(sup.StopChildren, e) {
		info := e.info
		info.ClientAddr = e.stats.ClientAddr()
		s.cfg.Counters.Count(stats.SessionFailed)
		system.EventStream.Publish(&messages.SessionFailed{SessionInfo: info, Reason: fmt.Sprint(reason)})
	}
}

// stopping runs before protoactor stops the children: every session still
// open is reported closed, and held initiations are released.
func (s *Supervisor) stopping(ctx actor.Context) {
	for client, p := range s.pending {
		delete(s.pending, client)
		udpio.PutBuffer(p.first.Buf)
	}
	// protoactor stops every child after this, policies included: stopping
	// them here too would send a second Stop to a dead actor.
	noStop := func(...*actor.PID) {}
	for _, e := range s.sessions {
		if s.remove(noStop, e) {
			info := e.info
			info.ClientAddr = e.stats.ClientAddr()
			s.cfg.Counters.Count(stats.SessionClosed)
			ctx.ActorSystem().EventStream.Publish(&messages.SessionClosed{SessionInfo: info})
		}
	}
}

// list reports every live session.
func (s *Supervisor) list() *messages.SessionList {
	l := &messages.SessionList{Relay: s.cfg.Relay, Sessions: make([]messages.SessionStatus, 0, len(s.sessions))}
	for _, e := range s.sessions {
		st := messages.SessionStatus{SessionInfo: e.info, Stats: e.stats.Snapshot(), Roam: e.stats.Saved()}
		st.ClientAddr = st.Stats.ClientAddr
		l.Sessions = append(l.Sessions, st)
	}
	return l
}
