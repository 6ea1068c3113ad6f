// Package session is the actor that owns one client's session: its upstream
// socket (the stable source port the upstream's ECMP hash sees), its client
// address, and its idle deadline.
//
// Datagram flow: the supervisor sends ClientDatagrams; the session writes
// them upstream with one sendmmsg and returns the buffers (client.go). Its
// worker's poller, one event loop for every session of the worker, reads
// the upstream's replies in batches and sends them to the session as
// UpstreamDatagrams (reader.go); the session addresses them to the client
// and hands them to the writer as ClientReplies (upstream.go).
// Where replies go is internal/roam's decision (roam.go); when the session
// ends for silence is idle.go's; what a plain client's session tells the
// supervisor, and the client ID it stamps, plain.go's; in a cluster, the
// client's datagrams that other nodes forward and the replies that go back
// through them, remote.go's.
//
// The session runs inline (actors/mailbox.Inline) on whichever goroutine
// sends to it while it is idle: the listener's reader for client datagrams,
// its worker's poller loop for replies, its idle timer for CheckIdle. One
// message at a time, whichever goroutine that is. A reload's new settings arrive as
// ApplySettings (settings.go).
package session

import (
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/cluster"
	"github.com/udpfwd/udpfwd/actors/mailbox"
	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/metrics"
	"github.com/udpfwd/udpfwd/internal/roam"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Config is what a session needs. The session takes ownership of Conn.
type Config struct {
	Info messages.SessionInfo
	// Handle is the supervisor's name for the session, which the session
	// gives back in what it tells the supervisor (SessionIdle and, for a
	// tracked plain client, IndexLearned and ClientConfirmed).
	Handle uint32
	// Tracked marks a plain WireGuard client's session (zero_id: track):
	// the supervisor finds it by the indexes the upstream assigns and by
	// its client's confirmed address, so the session tells it both
	// (plain.go).
	Tracked bool
	// Stamp, if not zero, is the client ID a tracked session writes into
	// bytes 1..3 of what it sends upstream, clearing them in what it sends
	// back to the client (stamp_client_id).
	Stamp wgproto.ClientID
	// Listener is the index of the listening socket the session's first
	// datagram came by.
	Listener uint8
	// Forward is the relay's forward mode: no WireGuard parsing, the
	// session forwards any datagram and replies follow the newest client
	// address (roam.Peer.Forward).
	Forward bool
	// Conn is the session's upstream socket, connected to the upstream.
	Conn *udpio.Conn
	// Writers send replies to clients, one per listening socket of the
	// relay, indexed by udpio.Batch.Listener.
	Writers []*actor.PID
	// IdleTimeout ends the session when either direction has been silent
	// for this long. Zero means never (static forward mode).
	IdleTimeout time.Duration
	Counters    *stats.Counters
	// Stats is this session's own record, read by the session API, and its
	// idle clock (see stats.Session).
	Stats *stats.Session
	// Poller is the worker's event loop that reads the upstream's replies
	// (reader.go): the session registers Conn with it while it lives.
	Poller *Poller
	// Roam is roaming state saved by an earlier run, to restore. The
	// session lets it go once restored.
	Roam []byte
	// Limits, if set, is the rate limit the client starts with (its
	// policy's answer, messages.SessionAdmitted.Limits); ApplyLimits
	// changes it later.
	Limits *limits.Limits
	// Failover is failover_after: after this many of its handshake
	// initiations in a row went unanswered, the session asks the
	// supervisor to move it to another upstream endpoint (failover.go);
	// zero never asks.
	Failover int
	// Logger is the relay's logger. The session adds its own fields
	// (session, client) to the lines it writes, when it writes them: a
	// child logger made with With holds a copy of its encoder (a buffer of
	// a kilobyte or more with zap's), which an idle session should not.
	Logger *zap.Logger
	// Status, if set, is the relay's health record: the session counts the
	// handshakes it forwards and answers, their round trip, and its own
	// lifetime when it ends (handshakes.go).
	Status *metrics.Status
	// Cluster, if set, makes the session a cluster's: it takes its
	// client's datagrams forwarded from other nodes and replies through
	// them (remote.go).
	Cluster *Cluster
}

// Validate reports a missing dependency.
func (c *Config) Validate() error {
	switch {
	case c.Conn == nil:
		return errors.New("session: no upstream socket")
	case c.Poller == nil:
		return errors.New("session: no poller to read the upstream socket")
	case len(c.Writers) == 0:
		return errors.New("session: no writer")
	case c.Counters == nil || c.Stats == nil:
		return errors.New("session: no counters")
	case c.Logger == nil:
		return errors.New("session: no logger")
	}
	return nil
}

// Props returns the props of a session actor. The session must not be
// restarted: its socket is closed when it stops, and the producer hands
// back the same Session, socket and all. Supervise it with a strategy that
// stops failed children (the supervisor does). Datagrams that queue up for
// it while it writes leave together in its next sendmmsg.
func Props(cfg Config) *actor.Props {
	s := &Session{cfg: cfg}
	return actor.PropsFromProducer(func() actor.Actor { return s },
		actor.WithMailbox(s.mailbox), actor.WithDispatcher(mailbox.Inline()))
}

// mailbox returns a new mailbox for s: bounded by QueueBytes, dropping what
// does not fit (dropQueued), flushing what s staged when it runs dry.
func (s *Session) mailbox() actor.Mailbox {
	bound := mailbox.Bound{Capacity: QueueBytes, Weigh: weigh, Drop: s.dropQueued}
	return mailbox.Bounded(bound, mailbox.OnEmpty(s.flush))()
}

// Spawner spawns sessions with one set of props for all of them. Props
// makes a session its own props (its producer hands back that session),
// a few hundred bytes that an idle session would keep for as long as it
// lives; a Spawner's props hand back the session being spawned instead.
// The sessions are what Props makes of cfg in every other way, and must
// not be restarted either. Spawn must not be called by two goroutines at
// once: the supervisor calls it on its own.
type Spawner struct {
	props *actor.Props
	next  *Session // the session being spawned
}

// NewSpawner returns a Spawner.
func NewSpawner() *Spawner {
	sp := &Spawner{}
	sp.props = actor.PropsFromProducer(sp.produce,
		actor.WithMailbox(func() actor.Mailbox { return sp.next.mailbox() }), actor.WithDispatcher(mailbox.Inline()))
	return sp
}

// produce hands protoactor the session being spawned. Outside Spawn (a
// restart, which the supervisor never lets happen) it hands back an actor
// that does nothing rather than nil.
func (sp *Spawner) produce() actor.Actor {
	if sp.next == nil {
		return nothing{}
	}
	return sp.next
}

// nothing is an actor that ignores every message.
type nothing struct{}

func (nothing) Receive(actor.Context) {}

// Spawn spawns the session of cfg as a child of ctx, named with prefix.
func (sp *Spawner) Spawn(ctx actor.SpawnerContext, cfg Config, prefix string) *actor.PID {
	sp.next = &Session{cfg: cfg}
	defer func() { sp.next = nil }()
	return ctx.SpawnPrefix(sp.props, prefix)
}

// QueueBytes bounds a session's mailbox by the memory its batches hold
// (udpio.Batch.Footprint). A session runs inline on whichever goroutine
// sends to it while it is idle, so its queue fills only while it runs on
// one goroutine (its poller's loop, say, handing replies to the writer) and
// another sends to it (the listener's, routing the client's datagrams), a
// few batches at most. 1 MiB holds 7 full batches (448 datagrams) or some
// 70 batches of one datagram; past it, a batch is dropped whole and its
// datagrams counted as queue_full. An idle session's queue holds nothing.
const QueueBytes = 1 << 20

// Session is the actor. Only the goroutine processing its mailbox touches
// its fields, except reader, which the poller's loop reads.
type Session struct {
	cfg  Config
	peer roam.Peer
	// stage holds the client's datagrams not yet written upstream; it is
	// flushed when full and whenever the mailbox runs dry, and given back
	// to the pool then, so that an idle session holds no batch.
	stage *udpio.Batch

	timer    *time.Timer
	idleSent bool
	// roamChanged is set when the roaming state changed since it was last
	// handed to Stats for saving.
	roamChanged bool
	// limits hold the client to the rate its policy set (Config.Limits,
	// ApplyLimits), each direction apart; nil while it is unlimited.
	// unconfirmed budgets what comes from client addresses the session has
	// not confirmed (roam package), each source apart; nil until the first
	// such datagram, and again once every budget in it is full.
	limits      *clientLimits
	unconfirmed *unconfirmedBudgets
	// handshakes times the initiations forwarded until their responses.
	handshakes handshakeClock
	// streak counts the client's initiations that went unanswered in a
	// row, and holds the one waiting while the session asks to move.
	streak streak

	// reader is the session's registration with its worker's poller,
	// polled its token.
	reader Reader
	polled udpio.PollToken

	// ingress are the other nodes' ways back to the client (remote.go),
	// nil until another node forwards a datagram.
	ingress *ingressWays
}

// Receive handles one message.
func (s *Session) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.ClientDatagrams:
		s.fromClient(ctx, m.Batch())
	case *messages.UpstreamDatagrams:
		s.fromUpstream(ctx, m.Batch())
	case *cluster.RemoteDatagrams:
		s.fromRemote(ctx, m)
	case *messages.CheckIdle:
		s.checkIdle(ctx)
	case *messages.ApplyLimits:
		s.applyLimits(m.Limits(), time.Now())
	case *messages.ApplySettings:
		s.applySettings(m)
	case *messages.SwapUpstream:
		s.swapUpstream(ctx, m)
	case *messages.StayOnEndpoint:
		s.stay()
	case *messages.Crash:
		panic(fmt.Sprintf("session %s: injected crash: %s", s.cfg.Info.Session, m.Reason))
	case *actor.Started:
		s.start(ctx)
	case *actor.Stopping:
		s.stop()
	}
}

func (s *Session) start(ctx actor.Context) {
	now := time.Now()
	s.peer.Forward = s.cfg.Forward
	s.restoreRoam(now)
	s.cfg.Roam = nil
	s.saveRoam()
	if s.cfg.Limits != nil {
		s.applyLimits(*s.cfg.Limits, now)
		s.cfg.Limits = nil
	}
	s.startReading(ctx, s.cfg.Conn)
	s.startIdleTimer(ctx)
}

// stop writes what is staged, leaves the poller and closes the socket. It
// may run on the poller's own goroutine (a session that fails, or is
// poisoned, while it handles its replies), which the poller allows.
func (s *Session) stop() {
	if s.timer != nil {
		s.timer.Stop()
	}
	s.ended(time.Now())
	s.flush()
	s.dropHeld()
	s.reader.stopped.Store(true)
	s.stopReading(s.cfg.Conn)
}

// info is the session's identity with its current client address.
func (s *Session) info() messages.SessionInfo {
	info := s.cfg.Info
	info.ClientAddr = s.peer.Addr()
	return info
}
