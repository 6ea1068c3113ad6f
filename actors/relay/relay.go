package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/listener"
	"github.com/udpfwd/udpfwd/actors/mailbox"
	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/actors/supervisor"
	"github.com/udpfwd/udpfwd/actors/writer"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/logx"
	"github.com/udpfwd/udpfwd/internal/state"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// Timing, with the reason for each. The settings' defaults are in
// internal/config.
const (
	// unresolvedRetry is how soon a hostname that has no address yet is
	// looked up again (for example while the network comes up at boot).
	unresolvedRetry = 5 * time.Second
	// resolveTimeout bounds one lookup.
	resolveTimeout = 5 * time.Second
	// stopTimeout bounds how long Close waits for one actor to stop.
	stopTimeout = 2 * time.Second
)

// Relay is a running relay.
type Relay struct {
	cfg       config.Relay
	policy    policy.Factory // the operator's own policy, after the built-in ones
	log       *zap.Logger
	system    *actor.ActorSystem
	ownSystem bool
	counters  stats.Counters

	addrs      []netip.AddrPort
	listeners  []*actor.PID
	writers    []*actor.PID
	supervisor *actor.PID
	sub        *eventSubscription

	restore []state.Session
	lookup  func(ctx context.Context, network, host string) ([]netip.Addr, error)
	readers sync.WaitGroup // the sessions' reader goroutines

	stopResolve context.CancelFunc
	resolveDone chan struct{}
	closeOnce   sync.Once
	closeErr    error
}

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

// NewSystem returns an actor system that logs through l.
func NewSystem(l *zap.Logger) *actor.ActorSystem {
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logx.Slog(l) }))
}

// Start binds every socket of cfg and starts the relay's actors. cfg is
// taken as it is: it must have passed config.File.Validate, which filled in
// its defaults. Errors binding a socket (address in use, permission) are
// returned, with the address, before any actor runs. An upstream hostname
// that does not resolve yet is not an error: it is retried, and sessions
// open once it resolves.
func Start(cfg config.Relay, l *zap.Logger, opts ...Option) (*Relay, error) {
	if len(cfg.Listen) == 0 || cfg.Upstream.IsZero() {
		return nil, fmt.Errorf("relay %q: no listen address or no upstream (validate the config first)", cfg.Name)
	}
	r := &Relay{cfg: cfg, log: l.With(zap.String("relay", cfg.Name))}
	for _, o := range opts {
		o(r)
	}
	if r.system == nil {
		r.system = NewSystem(l)
		r.ownSystem = true
	}
	sockOpts := udpio.Options{ReadBuffer: cfg.ReadBuffer, WriteBuffer: cfg.WriteBuffer, NoGSO: cfg.NoGSO}

	conns := make([]*udpio.Conn, 0, len(cfg.Listen))
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for _, ap := range cfg.Listen {
		c, err := udpio.Listen(ap, sockOpts)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("listen on %s: %w", ap, unwrapSyscall(err))
		}
		conns = append(conns, c)
		r.addrs = append(r.addrs, c.LocalAddr())
		r.logBuffers(c, "listen "+c.LocalAddr().String(), sockOpts)
	}

	scfg := supervisor.Config{
		Relay:         cfg.Name,
		UpstreamBind:  cfg.UpstreamBind,
		UpstreamPorts: [2]uint16{cfg.UpstreamPorts.First, cfg.UpstreamPorts.Last},
		IdleTimeout:   cfg.IdleTimeout,
		Policy:        policies(&cfg.Security, r.policy),
		MAC1:          mac1Key(&cfg.Security),
		Admission:     admission(&cfg.Security),
		Backlog:       &mailbox.Backlog{},
		SocketOptions: sockOpts,
		Counters:      &r.counters,
		Logger:        r.log,
		Readers:       &r.readers,
	}
	host, port := cfg.Upstream.Host(), cfg.Upstream.Port
	switch cfg.Mode {
	case config.ModeForward:
		scfg.Mode = supervisor.ModeForward
		up, err := r.resolve(context.Background(), cfg.Upstream)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("upstream %s: %w", cfg.Upstream, err)
		}
		fc, err := udpio.Dial(context.Background(), scfg.UpstreamBind, up, sockOpts)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("bind outbound %s to %s: %w", orAny(cfg.UpstreamBind), up, unwrapSyscall(err))
		}
		scfg.ForwardConn = fc
	default:
		if a := cfg.Upstream.Addr; a.IsValid() {
			scfg.Upstream = netip.AddrPortFrom(a.Unmap(), port)
		}
	}

	r.sub = subscribeLogger(r.system, cfg.Name, r.log)
	handleDeadLetters(r.system, &r.counters)
	for _, c := range conns {
		w := r.system.Root.Spawn(writer.Props(writer.Config{Conn: c, Counters: &r.counters, Logger: r.log}))
		r.writers = append(r.writers, w)
	}
	scfg.Writers = r.writers
	if err := scfg.Validate(); err != nil {
		closeAll()
		return nil, err
	}
	r.supervisor = r.system.Root.Spawn(supervisor.Props(scfg))
	if len(r.restore) > 0 {
		// Queued before any datagram: the listeners start after this.
		r.system.Root.Send(r.supervisor, r.restoreMessage())
	}
	for i, c := range conns {
		r.listeners = append(r.listeners, r.system.Root.Spawn(listener.Props(listener.Config{
			Conn: c, Index: uint8(i), Target: r.supervisor, Counters: &r.counters, Logger: r.log, Backlog: scfg.Backlog,
		})))
	}

	r.resolveDone = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	r.stopResolve = cancel
	if cfg.Mode == config.ModeWireGuard && cfg.Upstream.Name != "" {
		go r.resolveLoop(ctx, host, port)
	} else {
		close(r.resolveDone)
	}
	fields := []zap.Field{zap.String("mode", string(cfg.Mode)), zap.Stringers("listen", r.addrs), zap.Stringer("upstream", cfg.Upstream)}
	if cfg.Mode == config.ModeWireGuard { // forward mode has one session, which never expires
		fields = append(fields, zap.Duration("idle_timeout", cfg.IdleTimeout))
	}
	r.log.Info("relay started", fields...)
	return r, nil
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

// resolve looks the upstream up and picks one address: the configured one,
// else the first IPv4 address of its name (a VPS without IPv6 is common),
// else the first IPv6.
func (r *Relay) resolve(ctx context.Context, up config.HostPort) (netip.AddrPort, error) {
	host, port := up.Name, up.Port
	if up.Addr.IsValid() {
		return netip.AddrPortFrom(up.Addr.Unmap(), port), nil
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	lookup := net.DefaultResolver.LookupNetIP
	if r.lookup != nil {
		lookup = r.lookup
	}
	addrs, err := lookup(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	for _, a := range addrs {
		if a.Unmap().Is4() {
			return netip.AddrPortFrom(a.Unmap(), port), nil
		}
	}
	if len(addrs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("%s has no address", host)
	}
	return netip.AddrPortFrom(addrs[0], port), nil
}

// resolveLoop keeps the supervisor told of the upstream hostname's address.
func (r *Relay) resolveLoop(ctx context.Context, host string, port uint16) {
	defer close(r.resolveDone)
	var last netip.AddrPort
	for {
		ap, err := r.resolve(ctx, config.HostPort{Name: host, Port: port})
		wait := r.cfg.ResolveInterval
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			if !last.IsValid() {
				wait = unresolvedRetry
			}
			r.log.Warn("resolve upstream", zap.String("host", host), zap.Error(err), zap.Duration("retry_in", wait))
		case ap != last:
			if last.IsValid() {
				r.log.Info("upstream address changed; new sessions use it", zap.String("host", host), zap.Stringer("addr", ap), zap.Stringer("was", last))
			} else {
				r.log.Info("upstream resolved", zap.String("host", host), zap.Stringer("addr", ap))
			}
			last = ap
			r.system.Root.Send(r.supervisor, &messages.UpstreamResolved{Addr: ap})
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// ListenAddrs returns the addresses the relay listens on, with the ports
// the kernel chose for ":0".
func (r *Relay) ListenAddrs() []netip.AddrPort { return append([]netip.AddrPort(nil), r.addrs...) }

// Counters returns the relay's datagram and drop counters.
func (r *Relay) Counters() *stats.Counters { return &r.counters }

// System returns the actor system the relay runs in; its event stream
// carries the relay's session events.
func (r *Relay) System() *actor.ActorSystem { return r.system }

// Supervisor returns the session supervisor's PID.
func (r *Relay) Supervisor() *actor.PID { return r.supervisor }

// Sessions lists the relay's live sessions, asking its supervisor.
func (r *Relay) Sessions(timeout time.Duration) (*messages.SessionList, error) {
	res, err := r.system.Root.RequestFuture(r.supervisor, &messages.ListSessions{}, timeout).Result()
	if err != nil {
		return nil, fmt.Errorf("list sessions of %s: %w", r.cfg.Name, err)
	}
	l, ok := res.(*messages.SessionList)
	if !ok {
		return nil, fmt.Errorf("list sessions of %s: unexpected answer %T", r.cfg.Name, res)
	}
	return l, nil
}

// Config returns the relay's configuration, as Start was given it.
func (r *Relay) Config() config.Relay { return r.cfg }

// Healthy reports an error if one of the relay's actors has stopped.
func (r *Relay) Healthy() error {
	pids := append([]*actor.PID{r.supervisor}, r.listeners...)
	pids = append(pids, r.writers...)
	for _, pid := range pids {
		if _, ok := r.system.ProcessRegistry.Get(pid); !ok {
			return fmt.Errorf("relay %s: actor %s has stopped", r.cfg.Name, pid.Id)
		}
	}
	return nil
}

// Name is the relay's name.
func (r *Relay) Name() string { return r.cfg.Name }

// Close stops reading, stops every session (closing its socket), then the
// writers, and returns when all have stopped. It is safe to call twice.
//
// The order is that of the datagram path, senders before receivers, so that
// nothing is sent to an actor that has stopped, but for the one race named
// in step 4, and no buffer and no goroutine is left behind:
//
//  1. The resolver, the only sender of UpstreamResolved.
//  2. The listeners, the only senders of ClientDatagrams: each one's
//     Stopping closes its socket and waits for its reader to end, so once
//     StopFuture returns no datagram reaches the supervisor any more.
//  3. The supervisor, which sends to sessions and spawns them: its Stopping
//     drops pending admissions and ends every session as closed; then
//     protoactor stops its children, sessions and policies, before the
//     supervisor itself. Each session's Stopping writes what it staged and
//     closes its socket.
//  4. The sessions' readers, which send to sessions: with their sockets
//     closed they end at once (Close waits for them, bounded). One that
//     read a batch just before sees its session stopped and counts the
//     batch as session_gone and releases it; if the session stopped between
//     that check and the send, the batch is a dead letter, counted and
//     released the same way (handleDeadLetters).
//  5. The writers last, once no session and no reader is left to send them
//     replies: their Stopping writes what they staged. Their sockets (the
//     listeners') are closed by then, so those writes fail and are counted
//     as client_send_error, as any reply still in flight at shutdown is.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() {
		r.stopResolve()
		<-r.resolveDone
		var errs []error
		stop := func(pids ...*actor.PID) {
			futures := make([]*actor.Future, 0, len(pids))
			for _, pid := range pids {
				futures = append(futures, r.system.Root.StopFuture(pid))
			}
			for i, f := range futures {
				if err := f.Wait(); err != nil {
					errs = append(errs, fmt.Errorf("stop %s: %w", pids[i].Id, err))
				}
			}
		}
		stop(r.listeners...)
		stop(r.supervisor)
		// Every session has closed its socket; its reader ends at once.
		readersDone := make(chan struct{})
		go func() { r.readers.Wait(); close(readersDone) }()
		select {
		case <-readersDone:
		case <-time.After(stopTimeout):
			errs = append(errs, errors.New("session readers did not end"))
		}
		stop(r.writers...)
		r.sub.close()
		if r.ownSystem {
			deadLetterSystems.Delete(r.system)
			r.system.Shutdown()
		}
		r.closeErr = errors.Join(errs...)
		r.log.Info("relay stopped")
	})
	return r.closeErr
}
