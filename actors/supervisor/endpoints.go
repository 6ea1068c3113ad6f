package supervisor

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/metrics"
	"github.com/udpfwd/udpfwd/internal/pool"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// The relay's upstream endpoints. Most relays have one; a pool of several
// spreads new sessions by handshake round trip and lets a session leave an
// endpoint that stopped answering. The health of each endpoint is
// internal/pool's, fed by the sessions' EndpointHandshake reports; where a
// session goes, and when it may move, is decided here, in the supervisor's
// turn. A session owns its upstream socket throughout: to move it, the
// supervisor dials the new socket and hands it over (SwapUpstream), and
// the session closes its old one.

// eps is the supervisor's part for the pool.
type eps struct {
	pool *pool.Pool
	// addrs are the endpoints' addresses now, by pool index: the zero
	// value while a name has none.
	addrs []netip.AddrPort
}

// usable reports whether endpoint i has an address, for the pool's Pick
// and Next.
func (e *eps) usable(i int) bool { return e.addrs[i].IsValid() }

// newEndpoints builds the pool from the configuration: Config.Endpoints,
// or one endpoint at Config.Upstream. (Config.Upstream is an address of one
// of them, if any has one yet.)
func newEndpoints(cfg *Config) eps {
	list := cfg.Endpoints
	if len(list) == 0 {
		list = []messages.Endpoint{{Name: endpointName(cfg.Upstream), Addr: cfg.Upstream}}
	}
	names := make([]string, len(list))
	e := eps{addrs: make([]netip.AddrPort, len(list))}
	for i, ep := range list {
		names[i], e.addrs[i] = ep.Name, ep.Addr
	}
	e.pool = pool.New(pool.Config{FailAfter: cfg.FailoverAfter}, names...)
	return e
}

// endpointName names an endpoint given only by its address.
func endpointName(up netip.AddrPort) string {
	if up.IsValid() {
		return up.String()
	}
	return "upstream"
}

// refreshUpstream keeps s.upstream, which admissions check, an address of
// some endpoint: invalid only while no endpoint has one.
func (s *Supervisor) refreshUpstream() {
	s.upstream = netip.AddrPort{}
	for _, a := range s.addrs {
		if a.IsValid() {
			s.upstream = a
			return
		}
	}
}

// endpointIndex returns the index of the endpoint named name, "" being
// the first (what a message of a one-endpoint relay names); -1 if none.
func (s *Supervisor) endpointIndex(name string) int {
	if name == "" {
		return 0
	}
	return s.pool.Index(name)
}

// dialNew opens a new session's upstream socket, on the endpoint the pool
// picks, and returns the endpoint's index.
func (s *Supervisor) dialNew() (int, *udpio.Conn, error) {
	i, ok := s.pool.Pick(time.Now(), s.usable)
	if !ok {
		return 0, nil, errors.New("no upstream endpoint has an address")
	}
	c, err := s.dial(s.addrs[i])
	return i, c, err
}

// endpointHandshake records how a session's handshake with its endpoint
// went, and publishes EndpointDown or EndpointUp when that changes the
// endpoint's state.
func (s *Supervisor) endpointHandshake(ctx actor.Context, m *messages.EndpointHandshake) {
	i := s.pool.Index(m.Endpoint)
	if i < 0 {
		return // an endpoint a reload removed
	}
	now := time.Now()
	info := messages.EndpointInfo{Relay: s.cfg.Relay, Endpoint: m.Endpoint, Addr: s.addrs[i]}
	switch {
	case m.Answered:
		downFor := s.pool.DownFor(i, now)
		if s.pool.Answered(i, m.RTT, now) {
			ctx.ActorSystem().EventStream.Publish(&messages.EndpointUp{EndpointInfo: info, RTT: m.RTT, DownFor: downFor})
		}
	case s.pool.Unanswered(i, now):
		ctx.ActorSystem().EventStream.Publish(&messages.EndpointDown{
			EndpointInfo: info, Unanswered: max(s.cfg.FailoverAfter, 1), RetryIn: s.pool.RetryIn(i, now),
		})
	}
	s.publishEndpoints()
}

// moveSession answers a session whose initiations went unanswered
// failover_after times in a row. It moves only off an endpoint that is
// down (one that answers other sessions is not the trouble, and moving
// would break the session's 4-tuple for nothing), to the best other
// endpoint that is up or due for a try, on a socket dialled here and handed
// over; otherwise the session stays and asks again later.
func (s *Supervisor) moveSession(ctx actor.Context, m *messages.MoveSession) {
	e := s.sessions[key(m.Handle)]
	if e == nil || e.info.Session != m.Session.Session {
		return // it ended meanwhile, and is stopping
	}
	stay := func(why string) { ctx.Send(e.pid, &messages.StayOnEndpoint{Reason: why}) }
	from := s.pool.Index(e.info.Endpoint)
	if from < 0 || s.pool.Len() < 2 {
		stay("no other endpoint")
		return
	}
	if !s.pool.Down(from) {
		stay("its endpoint answers other sessions")
		return
	}
	to, ok := s.pool.Next(time.Now(), from, s.usable)
	if !ok {
		stay("no other endpoint is up")
		return
	}
	conn, err := s.dial(s.addrs[to])
	if err != nil {
		s.cfg.Logger.Warn("move session: open upstream socket", zap.Stringer("client", e.info.Client),
			zap.String("endpoint", s.pool.Name(to)), zap.Error(err))
		stay(fmt.Sprintf("open upstream socket: %v", err))
		return
	}
	old := e.info
	e.info.Endpoint, e.info.Upstream, e.info.UpstreamLocal = s.pool.Name(to), conn.RemoteAddr(), conn.LocalAddr()
	s.pool.AddSessions(from, -1)
	s.pool.AddSessions(to, 1)
	s.pool.Moved(from)
	s.publishEndpoints()
	// The event first: whoever sees the session's datagrams on the new
	// endpoint has seen it.
	info := e.info
	info.ClientAddr = e.stats.ClientAddr()
	ctx.ActorSystem().EventStream.Publish(&messages.SessionMoved{
		SessionInfo: info, FromEndpoint: old.Endpoint, FromUpstream: old.Upstream,
		FromUpstreamLocal: old.UpstreamLocal, Unanswered: m.Unanswered,
	})
	e.handover = messages.NewSwapUpstream(e.info.Endpoint, e.info.Upstream, conn)
	ctx.Send(e.pid, e.handover)
}

// dropHandover closes the socket last handed to a session that has
// terminated, if the session never took it.
func dropHandover(e *entry) {
	if e.handover != nil {
		if c := e.handover.Take(); c != nil {
			c.Close()
		}
		e.handover = nil
	}
}

// setEndpoints takes a reload's pool: endpoints that stay keep their
// records, and their addresses unless the reload gives one; new ones are
// unknown until they resolve (if they are names).
func (s *Supervisor) setEndpoints(eps []messages.Endpoint) {
	names := make([]string, len(eps))
	addrs := make([]netip.AddrPort, len(eps))
	for i, e := range eps {
		names[i], addrs[i] = e.Name, e.Addr
		if j := s.pool.Index(e.Name); j >= 0 && !addrs[i].IsValid() {
			addrs[i] = s.addrs[j]
		}
	}
	s.pool.SetNames(names...)
	s.addrs = addrs
	s.refreshUpstream()
}

// keepEndpoint decides, for a reload that changed the upstreams, which
// endpoint a live session is on now: its own if it is still in the pool,
// else the one whose literal address it is connected to. ok is false if it
// is on none: the session ends.
func (s *Supervisor) keepEndpoint(e *entry, eps []messages.Endpoint) (name string, ok bool) {
	for _, ep := range eps {
		if ep.Name == e.info.Endpoint {
			return ep.Name, true
		}
	}
	for _, ep := range eps {
		if ep.Addr.IsValid() && ep.Addr == e.info.Upstream {
			return ep.Name, true
		}
	}
	return "", false
}

// publishEndpoints records the endpoints' health in the relay's Status,
// for /metrics.
func (s *Supervisor) publishEndpoints() {
	if s.cfg.Status == nil || s.cfg.Mode != ModeWireGuard {
		return
	}
	st := s.pool.Status()
	out := make([]metrics.EndpointStatus, len(st))
	for i, e := range st {
		out[i] = metrics.EndpointStatus{Endpoint: e.Name, Up: e.Up, RTT: e.RTT, Sessions: e.Sessions,
			Answered: e.Answered, Unanswered: e.Unanswered, Failovers: e.Failovers}
	}
	s.cfg.Status.SetEndpoints(out)
}
