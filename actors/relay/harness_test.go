package relay_test

import (
	"bytes"
	"fmt"
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
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// waitTimeout bounds every wait in these tests.
const waitTimeout = 5 * time.Second

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

// recv reads one datagram within d; ok is false on timeout.
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

// startRelay starts a WireGuard-mode relay in front of up.
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

func startRelay(t *testing.T, listen string, up netip.AddrPort, idle time.Duration) *relay.Relay {
	t.Helper()
	return startConfig(t, relayConfig(t, up, func(c *config.Relay) { c.IdleTimeout = idle }, listen))
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

// events collects a relay's session events.
type events struct {
	mu  sync.Mutex
	all []any
	ch  chan any
}

func watchEvents(t *testing.T, r *relay.Relay) *events {
	return watchSystem(t, r.System())
}

// watchSystem collects the session events of every relay in system; it can
// be set up before a relay starts.
func watchSystem(t *testing.T, system *actor.ActorSystem) *events {
	e := &events{ch: make(chan any, 1024)}
	sub := system.EventStream.Subscribe(func(evt any) {
		if _, ok := evt.(messages.SessionEvent); ok {
			e.mu.Lock()
			e.all = append(e.all, evt)
			e.mu.Unlock()
			e.ch <- evt
		}
	})
	t.Cleanup(func() { system.EventStream.Unsubscribe(sub) })
	return e
}

// await returns the next event of type T, skipping others, or fails.
func await[T any](t *testing.T, e *events) T {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case evt := <-e.ch:
			if v, ok := evt.(T); ok {
				return v
			}
		case <-deadline:
			var zero T
			t.Fatalf("no %T event within the timeout", zero)
			return zero
		}
	}
}

// eventually polls cond until it holds or the wait times out.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
