package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/listener"
	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/actors/supervisor"
	"github.com/udpfwd/udpfwd/actors/writer"
	"github.com/udpfwd/udpfwd/internal/logx"
	"github.com/udpfwd/udpfwd/internal/state"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// Defaults, with the reason for each.
const (
	// DefaultIdleTimeout ends a session silent in either direction for
	// this long. WireGuard sends a keepalive at least every few minutes on
	// a live tunnel, and WARP clients every 25 s or so.
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultResolveInterval is how often an upstream hostname is looked
	// up again. WARP's anycast addresses change rarely.
	DefaultResolveInterval = 5 * time.Minute
	// unresolvedRetry is how soon a hostname that has no address yet is
	// looked up again (for example while the network comes up at boot).
	unresolvedRetry = 5 * time.Second
	// resolveTimeout bounds one lookup.
	resolveTimeout = 5 * time.Second
	// stopTimeout bounds how long Close waits for one actor to stop.
	stopTimeout = 2 * time.Second
	// DefaultName names a relay that was given no name.
	DefaultName = "default"
)

// Mode is how a relay groups datagrams.
type Mode string

// The relay modes.
const (
	// ModeWireGuard: one session, and one stable upstream source port, per
	// WARP client ID (header bytes 1..3).
	ModeWireGuard Mode = "wireguard"
	// ModeForward: plain UDP port forwarding; one upstream socket, replies
	// to the newest client address.
	ModeForward Mode = "forward"
)

// Config describes one relay.
type Config struct {
	// Name labels the relay in logs, events and metrics.
	Name string
	// Mode defaults to ModeWireGuard.
	Mode Mode
	// Listen are the addresses to listen on ("[::]:2408" is dual-stack).
	Listen []string
	// Upstream is the upstream "host:port"; the host may be a name.
	Upstream string
	// UpstreamBind is the local "addr:port" upstream sockets bind to.
	// Empty lets the kernel choose. In forward mode it is the outbound
	// socket's address (port 0: the kernel chooses).
	UpstreamBind string
	// IdleTimeout ends a session silent in either direction this long;
	// zero means DefaultIdleTimeout. Forward mode never expires.
	IdleTimeout time.Duration
	// ResolveInterval is how often a hostname upstream is looked up again;
	// zero means DefaultResolveInterval.
	ResolveInterval time.Duration
	// UpstreamPorts, if set, is the range upstream sockets bind in (for
	// firewall rules); each session takes a free port from it.
	UpstreamPorts PortRange
	// SocketBuffer is SO_RCVBUF and SO_SNDBUF for every socket; zero means
	// udpio.DefaultSocketBuffer. ReadBuffer and WriteBuffer, if set, take
	// precedence for their direction.
	SocketBuffer            int
	ReadBuffer, WriteBuffer int
	// NoGSO sends every datagram as its own message. By default runs of
	// same-size datagrams to one address go as one UDP GSO message (see
	// udpio.Conn.WriteBatch); this is the switch for a network path that
	// mishandles them.
	NoGSO bool
	// Security says who may use the relay and how much (wireguard mode).
	Security Security
	// Policy adds an operator's own policy actor after the built-in ones;
	// nil adds none.
	Policy policy.Factory
}

// Validate checks the configuration without touching the network and fills
// in defaults.
func (c *Config) Validate() error {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Mode == "" {
		c.Mode = ModeWireGuard
	}
	if c.Mode != ModeWireGuard && c.Mode != ModeForward {
		return fmt.Errorf("mode %q: want wireguard or forward", c.Mode)
	}
	if len(c.Listen) == 0 {
		return errors.New("no listen address")
	}
	if len(c.Listen) > 256 {
		return errors.New("at most 256 listen addresses per relay")
	}
	for _, l := range c.Listen {
		if _, err := ParseAddrPort(l, true); err != nil {
			return fmt.Errorf("listen address: %w", err)
		}
	}
	if _, _, err := SplitHostPort(c.Upstream); err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	if c.UpstreamBind != "" {
		ap, err := ParseAddrPort(c.UpstreamBind, true)
		if err != nil {
			return fmt.Errorf("upstream bind address: %w", err)
		}
		if c.Mode == ModeWireGuard && ap.Port() != 0 {
			return fmt.Errorf("upstream bind address %s: every session needs a port of its own; give port 0 (and a port range for firewall rules)", c.UpstreamBind)
		}
	}
	if !c.UpstreamPorts.IsZero() && (c.UpstreamPorts.First == 0 || c.UpstreamPorts.First > c.UpstreamPorts.Last) {
		return fmt.Errorf("upstream port range %d-%d: want 1 <= first <= last", c.UpstreamPorts.First, c.UpstreamPorts.Last)
	}
	if err := c.Security.validate(); err != nil {
		return err
	}
	if c.IdleTimeout < 0 {
		return fmt.Errorf("idle timeout %v: must be positive", c.IdleTimeout)
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.ResolveInterval < 0 {
		return fmt.Errorf("resolve interval %v: must be positive", c.ResolveInterval)
	}
	if c.ResolveInterval == 0 {
		c.ResolveInterval = DefaultResolveInterval
	}
	if c.SocketBuffer < 0 || c.ReadBuffer < 0 || c.WriteBuffer < 0 {
		return errors.New("socket buffer sizes must be positive")
	}
	return nil
}

// PortRange is an inclusive range of ports; the zero value is no range.
type PortRange struct{ First, Last uint16 }

// IsZero reports whether no range is set.
func (p PortRange) IsZero() bool { return p == PortRange{} }

// ParseAddrPort parses "ip:port" ("[v6]:port" for IPv6). A port of 0 is
// accepted only if zeroOK.
func ParseAddrPort(s string, zeroOK bool) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, fmt.Errorf("%q is not ip:port (write IPv6 as [::]:2408)", s)
	}
	if ap.Port() == 0 && !zeroOK {
		return ap, fmt.Errorf("%q: port 0", s)
	}
	return ap, nil
}

// SplitHostPort splits "host:port" and checks the port is 1..65535.
func SplitHostPort(s string) (host string, port uint16, err error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil || h == "" {
		return "", 0, fmt.Errorf("%q is not host:port", s)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("%q: port %q is not 1..65535", s, p)
	}
	return h, uint16(n), nil
}

// Relay is a running relay.
type Relay struct {
	cfg       Config
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

// NewSystem returns an actor system that logs through l.
func NewSystem(l *zap.Logger) *actor.ActorSystem {
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logx.Slog(l) }))
}

// Start binds every socket of cfg and starts the relay's actors. Errors
// binding a socket (address in use, permission) are returned, with the
// address, before any actor runs. An upstream hostname that does not
// resolve yet is not an error: it is retried, and sessions open once it
// resolves.
func Start(cfg Config, l *zap.Logger, opts ...Option) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Relay{cfg: cfg, log: l.With(zap.String("relay", cfg.Name))}
	for _, o := range opts {
		o(r)
	}
	if r.system == nil {
		r.system = NewSystem(l)
		r.ownSystem = true
	}
	sockOpts := udpio.Options{ReadBuffer: cfg.SocketBuffer, WriteBuffer: cfg.SocketBuffer, NoGSO: cfg.NoGSO}
	if cfg.ReadBuffer > 0 {
		sockOpts.ReadBuffer = cfg.ReadBuffer
	}
	if cfg.WriteBuffer > 0 {
		sockOpts.WriteBuffer = cfg.WriteBuffer
	}

	conns := make([]*udpio.Conn, 0, len(cfg.Listen))
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for _, l := range cfg.Listen {
		ap, _ := ParseAddrPort(l, true)
		c, err := udpio.Listen(ap, sockOpts)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("listen on %s: %w", l, unwrapSyscall(err))
		}
		conns = append(conns, c)
		r.addrs = append(r.addrs, c.LocalAddr())
		r.logBuffers(c, "listen "+c.LocalAddr().String(), sockOpts)
	}

	scfg := supervisor.Config{
		Relay:         cfg.Name,
		UpstreamPorts: [2]uint16{cfg.UpstreamPorts.First, cfg.UpstreamPorts.Last},
		IdleTimeout:   cfg.IdleTimeout,
		Policy:        cfg.Security.policies(cfg.Policy),
		MAC1:          cfg.Security.mac1Key(),
		SocketOptions: sockOpts,
		Counters:      &r.counters,
		Logger:        r.log,
		Readers:       &r.readers,
	}
	if cfg.UpstreamBind != "" {
		scfg.UpstreamBind, _ = ParseAddrPort(cfg.UpstreamBind, true)
	}
	host, port, _ := SplitHostPort(cfg.Upstream)
	literal, literalErr := netip.ParseAddr(host)
	switch cfg.Mode {
	case ModeForward:
		scfg.Mode = supervisor.ModeForward
		up, err := r.resolve(context.Background(), host, port)
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
		if literalErr == nil {
			scfg.Upstream = netip.AddrPortFrom(literal.Unmap(), port)
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
			Conn: c, Index: uint8(i), Target: r.supervisor, Counters: &r.counters, Logger: r.log,
		})))
	}

	r.resolveDone = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	r.stopResolve = cancel
	if cfg.Mode == ModeWireGuard && literalErr != nil {
		go r.resolveLoop(ctx, host, port)
	} else {
		close(r.resolveDone)
	}
	r.log.Info("relay started", zap.String("mode", string(cfg.Mode)), zap.Stringers("listen", r.addrs),
		zap.String("upstream", cfg.Upstream), zap.Duration("idle_timeout", cfg.IdleTimeout))
	return r, nil
}

func orAny(s string) string {
	if s == "" {
		return "any address"
	}
	return s
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

// resolve looks host up and picks one address: the literal itself, else the
// first IPv4 address (a VPS without IPv6 is common), else the first IPv6.
func (r *Relay) resolve(ctx context.Context, host string, port uint16) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(a.Unmap(), port), nil
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
		ap, err := r.resolve(ctx, host, port)
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

// Config returns the relay's configuration, defaults filled in.
func (r *Relay) Config() Config { return r.cfg }

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
