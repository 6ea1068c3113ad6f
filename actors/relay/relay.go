package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/cluster"
	"github.com/udpfwd/udpfwd/actors/listener"
	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/actors/supervisor"
	"github.com/udpfwd/udpfwd/actors/writer"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/logx"
	"github.com/udpfwd/udpfwd/internal/metrics"
	"github.com/udpfwd/udpfwd/internal/pool"
	"github.com/udpfwd/udpfwd/internal/replay"
	"github.com/udpfwd/udpfwd/internal/state"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Timing, with the reason for each. The settings' defaults are in
// internal/config.
const (
	// unresolvedRetry is how soon a hostname that has no address yet is
	// looked up again at first (for example while the network comes up at
	// boot); each failure doubles it, up to the resolve interval.
	unresolvedRetry = 5 * time.Second
	// resolveTimeout bounds one lookup.
	resolveTimeout = 5 * time.Second
	// stopTimeout bounds how long Close waits for one actor to stop.
	stopTimeout = 2 * time.Second
	// reconfigureTimeout bounds how long Reconfigure waits for the
	// supervisor to take the new settings: it tells every live session,
	// each a message, so tens of thousands take milliseconds.
	reconfigureTimeout = 10 * time.Second
)

// Relay is a running relay. Its settings change in place with Reconfigure
// (a reload); Close stops it.
type Relay struct {
	name      string
	origin    string         // where its rule was written, for a static forward
	policy    policy.Factory // the operator's own policy, after the built-in ones
	log       *zap.Logger
	system    *actor.ActorSystem
	ownSystem bool
	// root spawns the relay's top actors under stopOnFailure.
	root     *actor.RootContext
	counters stats.Counters
	status   metrics.Status
	caps     *limits.Caps // the session caps every policy actor counts against (wireguard mode)
	// admission is the relay's budget for opening sessions and replays
	// its memory of recent initiations, both shared by its workers'
	// supervisors.
	admission *limits.Admission
	replays   *replay.Table
	// spares are the upstream sockets dialled ahead for new sessions,
	// shared by its workers' supervisors too (supervisor.Spares).
	spares *supervisor.Spares

	// workers are fixed for the relay's life (a new count starts the
	// relay anew: Reconfigure returns ErrRestart).
	workers     []*worker
	sub         *eventSubscription
	endpointLog *eventSubscription
	restore     []state.Session
	lookup      func(ctx context.Context, network, host string) ([]netip.Addr, error)

	// ops serializes Reconfigure and Close: one changes the relay at a
	// time, and nothing changes it once it is closed.
	ops      sync.Mutex
	closed   bool
	closeErr error
	// retired are the writers of listening sockets a reload removed. They
	// live until Close, so that a reply a session sent just before it
	// learned of the removal reaches an actor (and fails on the closed
	// socket, counted) rather than a dead letter.
	retired []*actor.PID

	// mu guards what Reconfigure changes and the accessors read.
	mu  sync.RWMutex
	cfg config.Relay
	// slots are the listening addresses by listener index; nil where a
	// reload removed one (an index never names another address).
	slots []*slot
	// missing are configured listen addresses a reload could not bind.
	missing []netip.AddrPort

	resolvers     map[string]*resolver // by endpoint, for each given by name
	resolveEvery  atomic.Int64         // resolve_interval, for the resolvers
	upstreamKnown atomic.Bool          // some upstream endpoint has an address (health)
	// addrs are the upstream endpoints' addresses now, by endpoint
	// ("host:port" as configured), for the health record.
	addrMu sync.Mutex
	addrs  map[string]netip.AddrPort
	drops  kernelDrops

	// cluster, if set, is the process's cluster node (cluster.go);
	// replier sends the replies other nodes return through this relay.
	cluster      *cluster.Node
	clusterOwner bool
	replier      *actor.PID
	// listenFunc, if set, opens the listening groups (WithListener).
	listenFunc func(netip.AddrPort, udpio.GroupConfig) (*udpio.Group, error)
}

// slot is one listening address: its group of sockets, one per worker,
// with each worker's listener and writer. Its index in Relay.slots is the
// listener index that batches and saved roaming states carry, and the
// index of its writer in the writers every session of a worker holds.
type slot struct {
	want  netip.AddrPort // as configured (port 0: the kernel chose)
	addr  netip.AddrPort // as bound: every socket of the group has it
	group *udpio.Group
	// listeners[i] and writers[i] are worker i's: they read and write
	// socket i of the group.
	listeners, writers []*actor.PID
}

// conn is worker i's socket of the slot.
func (sl *slot) conn(i int) *udpio.Conn { return sl.group.Conns()[i] }

// Option changes how Start builds a relay.
type Option func(*Relay)

// WithSystem runs the relay's actors in an existing actor system (several
// relays in one process share one); Close then leaves the system running.
func WithSystem(s *actor.ActorSystem) Option { return func(r *Relay) { r.system = s } }

// WithLookup replaces the system resolver for the upstream's hostname (for
// tests, or a resolver of the operator's choosing).
func WithLookup(f func(ctx context.Context, network, host string) ([]netip.Addr, error)) Option {
	return func(r *Relay) { r.lookup = f }
}

// WithPolicy adds an operator's own policy actor after the built-in ones
// (those the config's security settings ask for).
func WithPolicy(f policy.Factory) Option { return func(r *Relay) { r.policy = f } }

// WithOrigin names where the relay's rule was written ("rules:4:2" for the
// second rule on line 4 of a static forward file): its log lines and its
// row in /sessions carry it, since a forward relay's name ("line4-2") has
// to be a metric label.
func WithOrigin(origin string) Option { return func(r *Relay) { r.origin = origin } }

// NewSystem returns an actor system that logs through l.
func NewSystem(l *zap.Logger) *actor.ActorSystem {
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logx.Slog(l) }))
}

// socketOptions are the options every socket of cfg is opened with.
func socketOptions(cfg *config.Relay) udpio.Options {
	return udpio.Options{ReadBuffer: cfg.ReadBuffer, WriteBuffer: cfg.WriteBuffer, NoGSO: cfg.NoGSO}
}

// Start binds every socket of cfg and starts the relay's actors. cfg is
// taken as it is: it must have passed config.File.Validate, which filled in
// its defaults. Errors binding a socket (address in use, permission) are
// returned, with the address, before any actor runs. An upstream hostname
// that does not resolve yet is not an error: it is retried, and sessions
// open once it resolves.
//
// Each listen address is bound as a group of one socket per worker
// (workerCount), steered by client ID when there are several
// (udpio.ListenGroup); the port stays private to this relay unless cfg
// shares it (reuse_port).
func Start(cfg config.Relay, l *zap.Logger, opts ...Option) (*Relay, error) {
	if len(cfg.Listen) == 0 || cfg.Upstream.IsZero() {
		return nil, fmt.Errorf("relay %q: no listen address or no upstream (validate the config first)", cfg.Name)
	}
	r := &Relay{name: cfg.Name, cfg: cfg}
	for _, o := range opts {
		o(r)
	}
	r.log = l.With(zap.String("relay", cfg.Name))
	if r.origin != "" {
		r.log = r.log.With(zap.String("rule", r.origin))
	}
	if r.system == nil {
		r.system = NewSystem(l)
		r.ownSystem = true
	}
	r.root = actor.NewRootContext(r.system, nil).WithGuardian(stopOnFailure)
	sockOpts := socketOptions(&cfg)
	n := workerCount(&cfg)

	slots := make([]*slot, 0, len(cfg.Listen))
	var workers []*worker
	var fc *udpio.Conn
	fail := func(err error) (*Relay, error) {
		for _, sl := range slots {
			sl.group.Close()
		}
		for _, w := range workers {
			w.poller.Close()
		}
		if fc != nil {
			fc.Close()
		}
		return nil, err
	}
	for _, ap := range cfg.Listen {
		g, err := r.listen(ap, groupConfig(&cfg, n))
		if err != nil {
			return fail(fmt.Errorf("listen on %s: %w", ap, unwrapGroup(err)))
		}
		slots = append(slots, &slot{want: ap, addr: g.LocalAddr(), group: g})
		r.logBuffers(g.Conns()[0], "listen "+g.LocalAddr().String(), sockOpts)
	}

	if cfg.Mode == config.ModeWireGuard {
		r.admission = admission(&cfg.Security)
		r.replays = replay.New(replay.Entries, replay.TTL, time.Now())
		r.spares = new(supervisor.Spares)
	}
	scfg := supervisor.Config{
		Relay:         cfg.Name,
		UpstreamBind:  cfg.UpstreamBind,
		UpstreamPorts: [2]uint16{cfg.UpstreamPorts.First, cfg.UpstreamPorts.Last},
		IdleTimeout:   cfg.IdleTimeout,
		MAC1:          mac1Key(&cfg.Security),
		Admission:     r.admission,
		Replays:       r.replays,
		Spares:        r.spares,
		SocketOptions: sockOpts,
		Logger:        r.log,
		Status:        &r.status,
		Clients:       clientsOf(&cfg),
	}
	switch cfg.Mode {
	case config.ModeForward:
		scfg.Mode = supervisor.ModeForward
		up, err := r.resolve(context.Background(), cfg.Upstream)
		if err != nil {
			return fail(fmt.Errorf("upstream %s: %w", cfg.Upstream, err))
		}
		fc, err = udpio.Dial(context.Background(), scfg.UpstreamBind, up, sockOpts)
		if err != nil {
			return fail(fmt.Errorf("bind outbound %s to %s: %w", orAny(cfg.UpstreamBind), up, unwrapSyscall(err)))
		}
		scfg.ForwardConn = fc
		r.setEndpointAddr(cfg.Upstream.String(), up)
	default:
		r.caps = limits.NewCaps(capsConfig(&cfg.Security))
		scfg.Policy = r.policies(&cfg.Security)
		r.status.SetSessionLimit(maxSessions(&cfg.Security))
		scfg.Endpoints = r.endpoints(&cfg)
		for _, e := range scfg.Endpoints {
			if !scfg.Upstream.IsValid() {
				scfg.Upstream = e.Addr // admissions wait until some endpoint has an address
			}
		}
		scfg.FailoverAfter = cfg.FailoverAfter
		// One health record for every worker: an endpoint one worker's
		// sessions find dead is skipped by every worker's new sessions.
		names := make([]string, len(scfg.Endpoints))
		for i, e := range scfg.Endpoints {
			names[i] = e.Name
		}
		scfg.Pool = pool.New(pool.Config{FailAfter: cfg.FailoverAfter}, names...)
	}
	for i := range n {
		w, err := r.newWorker(i)
		if err != nil {
			return fail(err)
		}
		workers = append(workers, w)
	}

	r.sub = subscribeLogger(r.system, cfg.Name, r.log)
	r.endpointLog = subscribeEndpointLogger(r.system, cfg.Name, r.log)
	handleDeadLetters(r.system, &r.counters)
	for _, sl := range slots {
		for _, w := range workers {
			sl.writers = append(sl.writers, r.spawnWriter(w, sl.conn(w.index)))
		}
	}
	var clusterCfg *supervisor.Cluster
	if cfg.Mode == config.ModeWireGuard {
		c, err := r.clusterConfig(slots)
		if err != nil {
			r.stopAll(new([]error), writersOf(slots)...)
			return fail(err)
		}
		clusterCfg = c
	}
	for _, w := range workers {
		wcfg := scfg
		wcfg.Counters, wcfg.Backlog, wcfg.Poller = w.counters, &w.backlog, w.poller
		wcfg.Writers = writerTable(slots, w.index)
		wcfg.Cluster = clusterCfg
		if w.index > 0 {
			wcfg.ForwardConn = nil // a forward relay has one worker; this is for clarity
		}
		if err := wcfg.Validate(); err != nil {
			for _, w := range workers {
				if w.supervisor != nil {
					r.stopAll(new([]error), w.supervisor)
				}
			}
			r.stopAll(new([]error), append(writersOf(slots), r.replierPIDs()...)...)
			return fail(err)
		}
		w.supervisor = r.root.Spawn(supervisor.Props(wcfg))
	}
	r.workers = workers
	if len(r.restore) > 0 {
		// Queued before any datagram: the listeners start after this.
		for i, m := range r.restoreMessages() {
			if len(m.Sessions) > 0 {
				r.system.Root.Send(workers[i].supervisor, m)
			}
		}
	}
	for i, sl := range slots {
		for _, w := range workers {
			sl.listeners = append(sl.listeners, r.spawnListener(w, i, sl.conn(w.index)))
		}
	}
	r.slots = slots
	r.drops.track(slots...)
	r.status.SetPoll(r.pollDrops)

	r.resolveEvery.Store(int64(cfg.ResolveInterval))
	if cfg.Mode == config.ModeWireGuard {
		r.startResolvers(&cfg)
	}
	r.status.SetUp(true)
	if cfg.Mode == config.ModeForward {
		// Forward mode has no sessions: its one outbound socket is shown
		// here, and in /sessions under "forwards".
		r.log.Info("forward started", zap.Stringers("listen", r.ListenAddrs()),
			zap.Stringer("out", scfg.ForwardConn.LocalAddr()), zap.Stringer("upstream", cfg.Upstream))
		return r, nil
	}
	fields := []zap.Field{zap.String("mode", string(cfg.Mode)), zap.Stringers("listen", r.ListenAddrs()),
		zap.Stringer("upstream", cfg.Upstream), zap.Duration("idle_timeout", cfg.IdleTimeout)}
	if len(cfg.MoreUpstreams) > 0 {
		fields[2] = zap.Stringers("upstream", cfg.Endpoints())
		fields = append(fields, zap.Int("failover_after", cfg.FailoverAfter))
	}
	fields = append(fields, zap.Int("workers", n), zap.Bool("reuse_port", cfg.ReusePort))
	r.log.Info("relay started", fields...)
	return r, nil
}

// endpoints lists cfg's upstream endpoints for the supervisor: each named
// as configured, with its address if it is one (a name's comes from its
// resolver), which the health record gets too.
func (r *Relay) endpoints(cfg *config.Relay) []messages.Endpoint {
	var eps []messages.Endpoint
	for _, h := range cfg.Endpoints() {
		e := messages.Endpoint{Name: h.String()}
		if h.Addr.IsValid() {
			e.Addr = netip.AddrPortFrom(h.Addr.Unmap(), h.Port)
			r.setEndpointAddr(e.Name, e.Addr)
		} else if a := r.endpointAddr(e.Name); a.IsValid() {
			e.Addr = a // a name that stays in a reload: resolved already
		}
		eps = append(eps, e)
	}
	return eps
}

// startResolvers starts a resolver for each endpoint of cfg given by name
// that has none yet.
func (r *Relay) startResolvers(cfg *config.Relay) {
	for _, h := range cfg.Endpoints() {
		if _, running := r.resolvers[h.String()]; h.Name != "" && !running {
			r.startResolver(h)
		}
	}
}

// spawnWriter starts worker w's writer of one of its listening sockets.
func (r *Relay) spawnWriter(w *worker, c *udpio.Conn) *actor.PID {
	return r.root.Spawn(writer.Props(writer.Config{Conn: c, Counters: w.counters, Logger: r.log}))
}

// spawnListener starts worker w's listener of its socket of the listening
// address of index i.
func (r *Relay) spawnListener(w *worker, i int, c *udpio.Conn) *actor.PID {
	return r.root.Spawn(listener.Props(listener.Config{
		Conn: c, Index: uint8(i), Target: w.supervisor, Counters: w.counters, Logger: r.log, Backlog: &w.backlog,
	}))
}

// writerTable is worker i's writers by listener index, nil for an empty
// slot.
func writerTable(slots []*slot, i int) []*actor.PID {
	w := make([]*actor.PID, len(slots))
	for j, sl := range slots {
		if sl != nil {
			w[j] = sl.writers[i]
		}
	}
	return w
}

// writersOf and listenersOf return every worker's writers and listeners of
// slots.
func writersOf(slots []*slot) []*actor.PID {
	var pids []*actor.PID
	for _, sl := range slots {
		if sl != nil {
			pids = append(pids, sl.writers...)
		}
	}
	return pids
}

func listenersOf(slots []*slot) []*actor.PID {
	var pids []*actor.PID
	for _, sl := range slots {
		if sl != nil {
			pids = append(pids, sl.listeners...)
		}
	}
	return pids
}

// replierPIDs is the actor that sends the replies other nodes of a
// cluster return through this relay, if there is one (cluster.go).
func (r *Relay) replierPIDs() []*actor.PID {
	if r.replier == nil {
		return nil
	}
	return []*actor.PID{r.replier}
}

// supervisors returns every worker's supervisor.
func (r *Relay) supervisors() []*actor.PID {
	pids := make([]*actor.PID, len(r.workers))
	for i, w := range r.workers {
		pids[i] = w.supervisor
	}
	return pids
}

// unwrapGroup makes a bind error one line that says what happened: "port
// in use" for an address another socket holds (another udpfwd, or any
// program), without the "listen ..." prefixes, since the caller names the
// address itself.
func unwrapGroup(err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("port in use: %w", syscall.EADDRINUSE)
	}
	return unwrapSyscall(err)
}

func orAny(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return "any address"
	}
	return ap.String()
}

// logBuffers warns when the kernel gave a socket less buffer than asked.
func (r *Relay) logBuffers(c *udpio.Conn, what string, o udpio.Options) {
	rb, wb, err := c.BufferSizes()
	want := o.ReadBuffer
	if want == 0 {
		want = udpio.DefaultSocketBuffer
	}
	// Linux reports twice the size asked for.
	if err == nil && (rb < want || wb < want) {
		r.log.Warn("socket buffers smaller than asked; raise net.core.rmem_max and wmem_max, or run with CAP_NET_ADMIN",
			zap.String("socket", what), zap.Int("want", want), zap.Int("read", rb/2), zap.Int("write", wb/2))
	}
}

// unwrapSyscall drops the "listen udp ..." prefix that package net puts on
// errors, since the caller names the address itself.
func unwrapSyscall(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// ListenAddrs returns the addresses the relay listens on, with the ports
// the kernel chose for ":0", in the order of the configuration.
func (r *Relay) ListenAddrs() []netip.AddrPort {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.listenAddrs()
}

// listenAddrs is ListenAddrs with r.mu held.
func (r *Relay) listenAddrs() []netip.AddrPort {
	var out []netip.AddrPort
	used := make([]bool, len(r.slots)) // the same address twice (port 0) is two sockets
	for _, want := range r.cfg.Listen {
		for i, sl := range r.slots {
			if sl != nil && sl.want == want && !used[i] {
				used[i] = true
				out = append(out, sl.addr)
				break
			}
		}
	}
	return out
}

// Counters returns the relay's datagram and drop counters.
func (r *Relay) Counters() *stats.Counters { return &r.counters }

// System returns the actor system the relay runs in; its event stream
// carries the relay's session events.
func (r *Relay) System() *actor.ActorSystem { return r.system }

// Workers is how many workers the relay runs: sockets in each listening
// group, supervisors, pollers.
func (r *Relay) Workers() int { return len(r.workers) }

// SupervisorOf returns the supervisor of the worker whose sessions include
// client's, if it has one: the worker the kernel steers the client ID's
// datagrams to. Zero-ID datagrams land on worker 0.
func (r *Relay) SupervisorOf(client wgproto.ClientID) *actor.PID {
	return r.workers[workerOf(client, len(r.workers))].supervisor
}

// Sessions lists the relay's live sessions, asking every worker's
// supervisor at once; the list is theirs together, in no particular order.
func (r *Relay) Sessions(timeout time.Duration) (*messages.SessionList, error) {
	futures := make([]*actor.Future, len(r.workers))
	for i, w := range r.workers {
		futures[i] = r.system.Root.RequestFuture(w.supervisor, &messages.ListSessions{}, timeout)
	}
	all := &messages.SessionList{Relay: r.name}
	for i, f := range futures {
		res, err := f.Result()
		if err != nil {
			return nil, fmt.Errorf("list sessions of %s (worker %d): %w", r.name, i, err)
		}
		l, ok := res.(*messages.SessionList)
		if !ok {
			return nil, fmt.Errorf("list sessions of %s (worker %d): unexpected answer %T", r.name, i, res)
		}
		if len(r.workers) == 1 {
			return l, nil
		}
		all.Sessions = append(all.Sessions, l.Sessions...)
	}
	return all, nil
}

// Config returns the relay's configuration as it runs: as Start was given
// it, or as the last Reconfigure changed it. Listen addresses a reload
// could not bind are left out, so that the next reload tries them again.
func (r *Relay) Config() config.Relay {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cfg
}

// Name is the relay's name.
func (r *Relay) Name() string { return r.name }

// Close stops reading, stops every session (closing its socket), then the
// writers, and returns when all have stopped. It is safe to call twice,
// and waits for a Reconfigure under way.
//
// The order is that of the datagram path, senders before receivers, so that
// nothing is sent to an actor that has stopped, but for the one race named
// in step 4, and no buffer and no goroutine is left behind:
//
//  1. The resolver, the only sender of UpstreamResolved.
//  2. The listeners of every worker, the only senders of ClientDatagrams:
//     each one's Stopping ends its reader (a read deadline: the socket
//     stays open, its group is closed whole in step 6) and waits for it,
//     so once StopFuture returns no datagram reaches a supervisor any more.
//  3. The supervisors, which send to sessions and spawn them: each one's
//     Stopping drops pending admissions and ends every session as closed;
//     then protoactor stops its children, sessions and policies, before
//     the supervisor itself. Each session's Stopping writes what it staged,
//     leaves its worker's poller and closes its socket.
//  4. The pollers, which send replies to sessions: with every session gone
//     they have nothing registered, and Close ends each one's loop. A batch
//     a loop was handing over as its session stopped finds the session's
//     reader stopped and is counted as session_gone and released; if the
//     session stopped between that check and the send, the batch is a dead
//     letter, counted and released the same way (handleDeadLetters).
//  5. The writers, those of removed listening sockets too, once no session
//     and no poller is left to send them replies: their Stopping writes
//     what they staged.
//  6. The listening groups, whole, each socket of each at once.
func (r *Relay) Close() error {
	r.ops.Lock()
	defer r.ops.Unlock()
	if r.closed {
		return r.closeErr
	}
	r.closed = true
	r.status.SetUp(false)
	r.status.SetPoll(nil)
	r.stopResolvers(nil)
	var errs []error
	r.mu.RLock()
	slots := slices.Clone(r.slots)
	r.mu.RUnlock()
	r.stopAll(&errs, listenersOf(slots)...)
	r.stopAll(&errs, r.supervisors()...)
	if r.spares != nil {
		r.spares.Close()
	}
	for _, w := range r.workers {
		if n := w.poller.Len(); n > 0 {
			errs = append(errs, fmt.Errorf("worker %d: %d upstream sockets still read after its sessions stopped", w.index, n))
		}
		if err := w.poller.Close(); err != nil {
			errs = append(errs, fmt.Errorf("worker %d: %w", w.index, err))
		}
	}
	r.stopAll(&errs, append(append(writersOf(slots), r.retired...), r.replierPIDs()...)...)
	for _, sl := range slots {
		if sl != nil {
			sl.group.Close()
		}
	}
	r.sub.close()
	r.endpointLog.close()
	if r.ownSystem {
		deadLetterSystems.Delete(r.system)
		r.system.Shutdown()
	}
	r.closeErr = errors.Join(errs...)
	r.log.Info("relay stopped")
	return r.closeErr
}
