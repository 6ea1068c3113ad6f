package relay_test

// The one set of helpers of the relay's tests: loopback upstreams and
// clients, relays started from a config, the event recorder, and the one
// poll (eventually). Every wait here is bounded by waitTimeout.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// waitTimeout bounds every wait for something that should happen: a
// datagram, an event, a counter. It only costs time when a test fails, so
// it is generous: a -race run on two busy cores can be slow by seconds.
const waitTimeout = 30 * time.Second

var (
	idA = wgproto.ClientID{0xa8, 0x1a, 0x15}
	idB = wgproto.ClientID{0x01, 0x02, 0x03}
)

// families are the address families every socket test runs in.
var families = []struct {
	name, any, loop string
}{
	{"ipv4", "127.0.0.1:0", "127.0.0.1"},
	{"ipv6", "[::1]:0", "::1"},
}

func at(host string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(host), port)
}

// received is one datagram an upstream or client read.
type received struct {
	from netip.AddrPort
	data []byte
}

// upstream is a fake WireGuard server on loopback: it records every
// datagram and, if echo is set, sends each one back to its source.
type upstream struct {
	conn *net.UDPConn
	in   chan received
	echo bool
}

func newUpstream(t *testing.T, addr string, echo bool) *upstream {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{conn: c, in: make(chan received, 4096), echo: echo}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			d := bytes.Clone(buf[:n])
			if u.echo {
				c.WriteToUDPAddrPort(d, from)
			}
			select {
			case u.in <- received{from, d}:
			default:
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return u
}

func (u *upstream) addr() netip.AddrPort { return u.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// next returns the next datagram the upstream received, or fails.
func (u *upstream) next(t *testing.T) received {
	t.Helper()
	select {
	case r := <-u.in:
		return r
	case <-time.After(waitTimeout):
		t.Fatal("upstream: no datagram within the timeout")
		return received{}
	}
}

// drain returns what the upstream has recorded so far, without waiting.
func (u *upstream) drain() []received {
	var all []received
	for {
		select {
		case r := <-u.in:
			all = append(all, r)
		default:
			return all
		}
	}
}

// sendTo sends a reply from the upstream to a session's port.
func (u *upstream) sendTo(t *testing.T, to netip.AddrPort, b []byte) {
	t.Helper()
	if _, err := u.conn.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatal(err)
	}
}

// client is a WireGuard client's socket on loopback.
type client struct {
	conn *net.UDPConn
	to   netip.AddrPort
}

func newClient(t *testing.T, local string, to netip.AddrPort) *client {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(local)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{conn: c, to: to}
}

func (c *client) addr() netip.AddrPort { return c.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (c *client) send(t *testing.T, b []byte) {
	t.Helper()
	if _, err := c.conn.WriteToUDPAddrPort(b, c.to); err != nil {
		t.Fatal(err)
	}
}

// recv reads one datagram within d; ok is false on timeout. A short d is
// for checking that nothing comes; waiting for a datagram that should come
// takes waitTimeout (mustRecv).
func (c *client) recv(d time.Duration) (b []byte, ok bool) {
	buf := make([]byte, 65536)
	c.conn.SetReadDeadline(time.Now().Add(d))
	n, _, err := c.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, false
	}
	return buf[:n], true
}

func (c *client) mustRecv(t *testing.T) []byte {
	t.Helper()
	b, ok := c.recv(waitTimeout)
	if !ok {
		t.Fatal("client: no reply within the timeout")
	}
	return b
}

// ping sends a transport message with counter n from c, through a session
// whose upstream echoes, and waits for that message to come back, sending
// it again every half second; it reports false if no copy came back within
// waitTimeout. It is safe to call from any goroutine.
func ping(c *client, id wgproto.ClientID, n uint64) bool {
	msg := wgtest.Transport(id, 7, n, 64)
	for deadline := time.Now().Add(waitTimeout); time.Now().Before(deadline); {
		if _, err := c.conn.WriteToUDPAddrPort(msg, c.to); err != nil {
			return false
		}
		resend := time.Now().Add(500 * time.Millisecond)
		if resend.After(deadline) {
			resend = deadline
		}
		for {
			b, ok := c.recv(time.Until(resend))
			if !ok {
				break
			}
			if bytes.Equal(b, msg) {
				return true
			}
		}
	}
	return false
}

// openEchoSession starts an echoing upstream and a relay in front of it on
// IPv4 loopback, and opens idA's session from a new client: its initiation
// has been echoed back.
func openEchoSession(t *testing.T) (*upstream, *relay.Relay, *client) {
	t.Helper()
	up := newUpstream(t, "127.0.0.1:0", true)
	r := startRelay(t, "127.0.0.1:0", up.addr(), 0)
	c := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	c.send(t, wgtest.Initiation(idA, 1))
	c.mustRecv(t)
	return up, r, c
}

// startRelay starts a WireGuard-mode relay in front of up with the idle
// timeout idle (zero: the default).
func startRelay(t *testing.T, listen string, up netip.AddrPort, idle time.Duration) *relay.Relay {
	t.Helper()
	return startConfig(t, relayConfig(t, up, func(c *config.Relay) { c.IdleTimeout = idle }, listen))
}

// startSecured starts a WireGuard-mode relay with the security settings sec
// in front of up, listening on every address of listen.
func startSecured(t *testing.T, up netip.AddrPort, sec config.Security, listen ...string) *relay.Relay {
	t.Helper()
	return startConfig(t, relayConfig(t, up, func(c *config.Relay) { c.Security = sec }, listen...))
}

// relayConfig returns the validated config of a WireGuard-mode relay named
// "default" in front of up, listening on every address of listen ("[::1]:0"),
// after edit (if not nil) has changed what it needs. Defaults are filled in
// as for the command line.
func relayConfig(tb testing.TB, up netip.AddrPort, edit func(*config.Relay), listen ...string) config.Relay {
	tb.Helper()
	r := config.Relay{Name: config.DefaultName, Upstream: config.HostPortFrom(up)}
	for _, l := range listen {
		r.Listen = append(r.Listen, netip.MustParseAddrPort(l))
	}
	if edit != nil {
		edit(&r)
	}
	f := &config.File{Relays: []config.Relay{r}}
	if _, err := f.Validate(); err != nil {
		tb.Fatalf("test relay config: %v", err)
	}
	return f.Relays[0]
}

// startConfig starts a relay with cfg and opts, checks at the end of the test that
// no message reached a stopped actor, and closes it.
func startConfig(t *testing.T, cfg config.Relay, opts ...relay.Option) *relay.Relay {
	t.Helper()
	r, err := relay.Start(cfg, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)), opts...)
	if err != nil {
		t.Fatal(err)
	}
	noDeadLetters(t, r)
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

// listenerFor returns the relay's listening address of from's family.
func listenerFor(t *testing.T, r *relay.Relay, from string) netip.AddrPort {
	t.Helper()
	v6 := netip.MustParseAddrPort(from).Addr().Is6()
	for _, a := range r.ListenAddrs() {
		if a.Addr().Is6() == v6 {
			return a
		}
	}
	t.Fatalf("the relay listens on %v: none for %s", r.ListenAddrs(), from)
	return netip.AddrPort{}
}

// noDeadLetters fails the test if a message other than an idle timer's
// tick reaches a stopped actor: the relay is built so that none does.
//
// A Stop is not counted either. When the supervisor has just stopped a
// child (a refused client's policy actor, an expired session's) and is
// stopped itself before it has handled that child's Terminated, protoactor
// (actorContext.stopAllChildren) sends the dead child a second Stop. It
// carries nothing and nothing is lost; seen with the race detector on a
// busy machine when a relay closes right after refusing sessions.
func noDeadLetters(t *testing.T, r *relay.Relay) {
	var mu sync.Mutex
	var seen []string
	sub := r.System().EventStream.Subscribe(func(evt any) {
		if d, ok := evt.(*actor.DeadLetterEvent); ok {
			_, tick := d.Message.(*messages.CheckIdle)
			_, stop := d.Message.(*actor.Stop)
			if !tick && !stop {
				mu.Lock()
				seen = append(seen, fmt.Sprintf("%T to %v", d.Message, d.PID))
				mu.Unlock()
			}
		}
	})
	t.Cleanup(func() {
		r.System().EventStream.Unsubscribe(sub)
		mu.Lock()
		defer mu.Unlock()
		if len(seen) > 0 {
			t.Errorf("dead letters: %v", seen)
		}
	})
}

// events records a relay's session events (messages.SessionEvent) in the
// order they are published. Recording never blocks the event stream,
// however many events a test, or a broken relay, produces.
//
// The relay moves its counters before it publishes the event they count,
// so a test that needs both waits for the events (await, or eventually on
// seen) and then reads the counters; never the other way round.
type events struct {
	mu   sync.Mutex
	all  []any
	next int           // await's cursor: the events before it were returned or skipped
	wake chan struct{} // closed, and replaced, when an event is recorded
}

// watchEvents records r's session events from now on.
func watchEvents(t *testing.T, r *relay.Relay) *events {
	return watchSystem(t, r.System())
}

// watchSystem records the session events of every relay in system; it can
// be set up before a relay starts (restoring publishes at once).
func watchSystem(t *testing.T, system *actor.ActorSystem) *events {
	e := &events{wake: make(chan struct{})}
	sub := system.EventStream.Subscribe(func(evt any) {
		if _, ok := evt.(messages.SessionEvent); ok {
			e.mu.Lock()
			e.all = append(e.all, evt)
			close(e.wake)
			e.wake = make(chan struct{})
			e.mu.Unlock()
		}
	})
	t.Cleanup(func() { system.EventStream.Unsubscribe(sub) })
	return e
}

// await returns the next event of type T: the first after every event an
// earlier await returned or skipped. It skips events of other types, and
// fails the test if none comes within waitTimeout.
func await[T any](t testing.TB, e *events) T {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		e.mu.Lock()
		for ; e.next < len(e.all); e.next++ {
			if v, ok := e.all[e.next].(T); ok {
				e.next++
				e.mu.Unlock()
				return v
			}
		}
		wake := e.wake
		e.mu.Unlock()
		select {
		case <-wake:
		case <-deadline.C:
			var zero T
			t.Fatalf("no %T event within %v", zero, waitTimeout)
			return zero
		}
	}
}

// seen returns every event of type T recorded so far for which match (if
// not nil) holds.
func seen[T any](e *events, match func(T) bool) []T {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []T
	for _, evt := range e.all {
		if v, ok := evt.(T); ok && (match == nil || match(v)) {
			out = append(out, v)
		}
	}
	return out
}

// count returns how many events of type T were recorded so far.
func count[T any](e *events) int { return len(seen[T](e, nil)) }

// opened returns the client IDs of the sessions opened so far, with the
// address that opened each.
func (e *events) opened() map[wgproto.ClientID]netip.AddrPort {
	m := map[wgproto.ClientID]netip.AddrPort{}
	for _, o := range seen[*messages.SessionOpened](e, nil) {
		m[o.Client] = o.ClientAddr
	}
	return m
}

// roamed reports whether a ClientRoamed from from to to was recorded.
func (e *events) roamed(from, to netip.AddrPort) bool {
	return len(seen(e, func(r *messages.ClientRoamed) bool { return r.From == from && r.ClientAddr == to })) > 0
}

// eventually polls cond until it holds. If it does not within waitTimeout,
// the test fails, naming what it waited for and what each of state says at
// that moment. Wait for an event with await; poll for what has none (a
// drop counter, a port being freed).
func eventually(t testing.TB, what string, cond func() bool, state ...func() string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("timed out after %v waiting for %s", waitTimeout, what)
			sep := ": "
			for _, s := range state {
				msg, sep = msg+sep+s(), "; "
			}
			t.Fatal(msg)
		}
		time.Sleep(time.Millisecond)
	}
}

// portFree reports whether a UDP address can be bound: whether the session
// that had it closed its socket.
func portFree(ap netip.AddrPort) bool {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// burstID is the client ID of the i-th client of a burst.
func burstID(i int) wgproto.ClientID { return wgproto.ClientID{0x40, byte(i >> 8), byte(i)} }

// fillRandom fills b from rng.
func fillRandom(rng *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], rng.Uint64())
		copy(b[i:], w[:])
	}
}
