// Package supervisor is the session-supervisor actor: it routes every
// datagram a listener reads to the session of its client ID, opens sessions
// (after asking the client's policy actor), and supervises them so that a
// session that fails ends alone.
//
// Routing is the relay's one shared step, so it is kept cheap: one header
// parse and one map lookup per datagram, and one message per session per
// read batch.
//
// The files, one idea each:
//   - route.go: routing a read batch to sessions, and the drops on the way;
//   - plain.go: finding plain WireGuard clients' sessions (zero_id:
//     track) by the upstream's indexes and their confirmed addresses;
//   - warn.go: saying, once per source, why a client gets nothing;
//   - admission.go: the admission path (replays, the budget, admissions
//     waiting for their policy's answer), and the one cleanup of an
//     admission that opens no session;
//   - dial.go: upstream sockets, in a port range if one is set;
//   - endpoints.go: the pool of upstream endpoints, their health from the
//     sessions' handshakes, and moving a session off a dead endpoint;
//   - restore.go: re-opening sessions saved by an earlier run;
//   - list.go: listing the live sessions, off the supervisor's turn;
//   - lifecycle.go: spawning a session, the one "session ended" path, and
//     what idle expiry, termination, failure and stopping do with it;
//   - reconfigure.go: a reload's new settings, applied in place;
//   - cluster.go: in a cluster, registering sessions, looking up clients
//     whose session lives on another node, and forwarding to it.
package supervisor

import (
	"errors"
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/cluster"
	"github.com/udpfwd/udpfwd/actors/mailbox"
	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/actors/session"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/metrics"
	"github.com/udpfwd/udpfwd/internal/pool"
	"github.com/udpfwd/udpfwd/internal/replay"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Mode says how datagrams are grouped into sessions.
type Mode int

// The relay's modes, named as the configuration names them.
const (
	// ModeWireGuard groups datagrams by WARP client ID: one session, and
	// one upstream port, per client ID.
	ModeWireGuard Mode = iota
	// ModeForward sends every datagram through one session with a
	// pre-bound upstream socket (static port-to-port forwarding).
	ModeForward
)

// Config is what a supervisor needs.
type Config struct {
	Relay string
	Mode  Mode
	// Upstream is the upstream address (WireGuard mode); it may be the zero
	// value until the first UpstreamResolved message.
	Upstream netip.AddrPort
	// Endpoints, if set, are the relay's upstream endpoints (WireGuard
	// mode), the first being Upstream: a pool that new sessions are spread
	// over by handshake round trip and that sessions fail over within
	// (endpoints.go). Unset is one endpoint at Upstream.
	Endpoints []messages.Endpoint
	// FailoverAfter is how many handshake initiations in a row may go
	// unanswered before a session asks to move, and before its endpoint
	// is marked down; zero is one.
	FailoverAfter int
	// Pool, if set, is the endpoints' health shared by the relay's
	// workers (built with Endpoints' names and FailoverAfter): an endpoint
	// one worker's sessions find dead is skipped by the others' new
	// sessions. Unset, the supervisor keeps its own.
	Pool *pool.Pool
	// UpstreamBind is the local address upstream sockets bind to; the zero
	// value lets the kernel choose address and port.
	UpstreamBind netip.AddrPort
	// UpstreamPorts, if not zero, is the inclusive range of local ports
	// upstream sockets bind in.
	UpstreamPorts [2]uint16
	// ForwardConn is the pre-bound upstream socket of forward mode.
	ForwardConn *udpio.Conn
	// Writers send replies to clients, one per listening socket, indexed
	// by udpio.Batch.Listener.
	Writers       []*actor.PID
	IdleTimeout   time.Duration
	Policy        policy.Factory // nil means policy.AllowAll
	SocketOptions udpio.Options
	Counters      *stats.Counters
	Logger        *zap.Logger
	// Poller is the worker's event loop that reads its sessions' upstream
	// sockets; every session registers with it.
	Poller *session.Poller
	// MAC1, if set, is the upstream's mac1 key: a handshake initiation is
	// forwarded only if its mac1 is valid for it (computed with the client
	// ID zeroed), so junk cannot open sessions or reach the upstream.
	MAC1 *wgproto.MAC1Key
	// Status, if set, is the relay's health record: sessions count their
	// handshakes and their lifetime in it.
	Status *metrics.Status
	// Admission is the relay's budget for opening sessions, and Replays
	// its memory of recent initiations (admission.go). The supervisors of
	// one relay share them; nil gives the supervisor its own, with the
	// defaults.
	Admission *limits.Admission
	Replays   *replay.Table
	// Backlog, if set, shows the batches queued for the supervisor (their
	// weight, see QueueBytes); the relay gives it to its listeners, which
	// wait while it is not zero (actors/listener).
	Backlog *mailbox.Backlog
	// Spares, if set, are the upstream sockets dialled ahead for new
	// sessions, shared by the relay's workers (spare.go); the relay closes
	// them once every supervisor has stopped. Unset, the supervisor keeps
	// its own.
	Spares *Spares
	// Clients says which clients it serves beyond WARP clients with an ID
	// in well-formed WireGuard: plain clients, stamping, any framing
	// (plain.go, route.go).
	Clients messages.Clients
	// Cluster, if set, makes the supervisor a cluster node's (cluster.go).
	Cluster *Cluster
}

// Validate reports a configuration the supervisor cannot run with.
func (c *Config) Validate() error {
	switch {
	case len(c.Writers) == 0:
		return errors.New("supervisor: no writer")
	case c.Counters == nil:
		return errors.New("supervisor: no counters")
	case c.Poller == nil:
		return errors.New("supervisor: no poller for the sessions' upstream sockets")
	case c.Logger == nil:
		return errors.New("supervisor: no logger")
	case c.Mode == ModeForward && c.ForwardConn == nil:
		return errors.New("supervisor: forward mode without an upstream socket")
	case c.Mode == ModeWireGuard && c.IdleTimeout <= 0:
		return errors.New("supervisor: idle timeout must be positive")
	}
	return nil
}

// Props returns the props of a supervisor actor. It runs inline
// (mailbox.Inline) on whichever goroutine sends to it while it is idle: a
// listener's reader for datagrams, a policy actor's for its answer, the
// resolver's, a session's idle timer's (by way of the session), the caller
// of Relay.Sessions' (actors/relay's package doc has the whole map).
//
// The supervisor must not be restarted. protoactor stops a restarting
// actor's children, so every session would end outside the one "session
// ended" path (no event, no count), the new instance would start with empty
// tables, and in forward mode it would open its one session again on the
// socket the old session closed. Nothing in it fails on purpose; a relay
// that needs it back starts anew.
func Props(cfg Config) *actor.Props {
	if cfg.Policy == nil {
		cfg.Policy = policy.AllowAll
	}
	now := time.Now()
	if cfg.Admission == nil {
		cfg.Admission = limits.NewAdmission(limits.AdmissionConfig{}, now)
	}
	if cfg.Replays == nil {
		cfg.Replays = replay.New(replay.Entries, replay.TTL, now)
	}
	counters := cfg.Counters
	bound := mailbox.Bound{Capacity: QueueBytes, Weigh: messages.Footprint, Backlog: cfg.Backlog, Drop: func(m any) {
		if b := messages.Datagrams(m); b != nil {
			counters.Drop(stats.QueueFull, len(b.Datagrams))
			b.Release()
		}
	}}
	return actor.PropsFromProducer(func() actor.Actor { return newSupervisor(cfg) },
		actor.WithMailbox(mailbox.Bounded(bound)), actor.WithDispatcher(mailbox.Inline()))
}

// QueueBytes bounds the supervisor's mailbox: the batches the listeners
// read while the supervisor runs on another goroutine (opening a session on
// a policy's answer, 31-41 µs; ending one on its idle timer), by the
// memory they hold (udpio.Batch.Footprint). When it is idle, the
// supervisor routes inline in the listener's goroutine and nothing queues.
// A listener that finds batches queued waits for them to be routed
// (Config.Backlog), up to a few milliseconds, so that the socket's buffer
// holds the datagrams meanwhile and the queue fills with full batches:
// 4 MiB holds 29 of them (1 856 datagrams), which with the socket's buffer
// covers the supervisor descheduled for tens of milliseconds on a busy
// machine. Past it, a batch is dropped whole and its datagrams counted as
// queue_full.
const QueueBytes = 4 << 20

// entry is the supervisor's record of one live session.
type entry struct {
	key key // its place in sessions
	pid *actor.PID
	// policy is the policy actor that stays with the session
	// (SessionAdmitted.Stay), nil if none does (and in forward mode);
	// release gives back what its admission holds (SessionAdmitted.Release).
	policy  *actor.PID
	release func()
	forward bool // forward mode's one session: no client, no session events
	info    messages.SessionInfo
	out     *udpio.Batch // datagrams being routed to it in this batch
	stats   *stats.Session
	// handover is the last upstream socket handed to the session
	// (SwapUpstream): closed when the session terminates if it never took
	// it.
	handover *messages.SwapUpstream
	plain    *plainSession // a tracked plain client's addresses and indexes; nil for a client ID
}

// Supervisor is the actor. It implements actor.SupervisorStrategy itself,
// so that it learns which session failed and why.
type Supervisor struct {
	cfg      Config
	upstream netip.AddrPort
	// eps are the upstream endpoints and their health (endpoints.go).
	eps
	// sessions holds the live sessions by key (a client ID, or a plain
	// client's number: plain.go): what routing sees. A session leaves it
	// on the one "session ended" path (end).
	sessions map[key]*entry
	// byPID holds every session actor not yet terminated, live or ended,
	// by pid.Id, for Terminated and failures.
	byPID   map[string]*entry
	pending map[key]*pending
	touched []*entry
	drops   [stats.NumReasons]int
	mac1    *wgproto.MAC1Checker
	// budget and replays decide, before anything is spent on it, whether
	// an initiation may ask for a session (admission.go).
	budget  *limits.Admission
	replays *replay.Table
	now     func() time.Time
	// batchNow is the clock read once for the batch being routed (clock),
	// zero until read.
	batchNow time.Time
	// plain holds the tables that find plain clients' sessions (plain.go).
	plain plainTable
	// warn says once per source, and sampled, why a client gets nothing
	// (warn.go).
	warn warner
	// spares are upstream sockets dialled ahead for new sessions
	// (spare.go): the relay's (Config.Spares), or the supervisor's own,
	// which it closes when it stops (ownSpares).
	spares    *Spares
	ownSpares bool
	// spawner spawns the sessions, all with one set of props.
	spawner *session.Spawner
	// self is the supervisor's PID, where asynchronous cluster answers go;
	// cl its cluster tables (cluster.go), empty without a cluster.
	self *actor.PID
	cl   clusterState
}

func newSupervisor(cfg Config) *Supervisor {
	var mac1 *wgproto.MAC1Checker
	if cfg.MAC1 != nil {
		mac1 = wgproto.NewMAC1Checker(*cfg.MAC1)
	}
	if cfg.Admission == nil {
		cfg.Admission = limits.NewAdmission(limits.AdmissionConfig{}, time.Now())
	}
	if cfg.Replays == nil {
		cfg.Replays = replay.New(replay.Entries, replay.TTL, time.Now())
	}
	spares, ownSpares := cfg.Spares, false
	if spares == nil {
		spares, ownSpares = new(Spares), true
	}
	now := time.Now()
	return &Supervisor{
		mac1:     mac1,
		budget:   cfg.Admission,
		replays:  cfg.Replays,
		now:      time.Now,
		cfg:      cfg,
		upstream: cfg.Upstream,
		sessions: make(map[key]*entry),
		byPID:    make(map[string]*entry),
		pending:  make(map[key]*pending),
		eps:      newEndpoints(&cfg),
		plain:    newPlainTable(now, MaxTrackedIndexes),
		warn:     newWarner(cfg.Logger),
		spawner:  session.NewSpawner(),

		spares:    spares,
		ownSpares: ownSpares,
		cl:        newClusterState(),
	}
}

// Receive handles one message.
func (s *Supervisor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.ClientDatagrams:
		s.route(ctx, m.Batch())
	case *messages.SessionAdmitted:
		s.admitted(ctx, m)
	case *messages.SessionRefused:
		s.refused(ctx, m)
	case *messages.SessionIdle:
		s.idle(ctx, m)
	case *messages.IndexLearned:
		s.indexLearned(m)
	case *messages.ClientConfirmed:
		s.clientConfirmed(m)
	case *messages.UpstreamResolved:
		s.resolved(m)
	case *messages.RestoreSessions:
		s.restore(ctx, m.Sessions)
	case *messages.ListSessions:
		s.respondList(ctx)
	case *messages.Reconfigure:
		s.reconfigure(ctx, m)
	case *messages.EndpointHandshake:
		s.endpointHandshake(ctx, m)
	case *messages.MoveSession:
		s.moveSession(ctx, m)
	case *messages.Crash:
		if e := s.sessions[idKey(m.Client)]; e != nil {
			ctx.Send(e.pid, m)
		}
	case *cluster.Located:
		s.located(ctx, m)
	case *cluster.Registered:
		s.registered(ctx, m)
	case *actor.Terminated:
		s.terminated(ctx, m.Who)
	case *actor.Started:
		s.self = ctx.Self()
		if s.cfg.Mode == ModeForward {
			s.openForward(ctx)
		}
		s.publishEndpoints()
	case *actor.Stopping:
		s.stopping(ctx)
	case *actor.Restarting:
		s.closeSpares()
	}
}
