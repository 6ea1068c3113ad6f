package relay_test

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// A restored session roams exactly as it would have without the restart:
// one whose upstream only echoes (it never answered a handshake) follows
// the client to a new port at once, as before; one whose upstream answered
// moves only for a transport with the index it learned, and a transport
// from a new port with another index is dropped, as before.
func TestRestoredSessionRoamsAsBefore(t *testing.T) {
	t.Run("echo upstream", func(t *testing.T) {
		up := newUpstream(t, "127.0.0.1:0", true)
		a, r := restartedSession(t, up, func(c *client) {
			for _, d := range [][]byte{wgtest.Initiation(idA, 1), wgtest.Transport(idA, 9, 0, 64)} {
				c.send(t, d)
				c.mustRecv(t)
				up.next(t)
			}
		})
		b := newClient(t, "127.0.0.1:0", a.to)
		d := wgtest.Transport(idA, 9, 1, 64)
		b.send(t, d)
		if got := b.mustRecv(t); !bytes.Equal(got, d) {
			t.Fatalf("the new port got %x, want its echo", got)
		}
		if got := up.next(t); got.from != r.port {
			t.Fatalf("the datagram left from %v, want the restored session's port %v", got.from, r.port)
		}
		if _, ok := a.recv(50 * time.Millisecond); ok {
			t.Fatal("the old port still gets replies")
		}
		if n := r.relay.Counters().TotalDropped(); n != 0 {
			t.Fatalf("%d datagrams dropped", n)
		}
	})
	t.Run("answering upstream", func(t *testing.T) {
		up := newUpstream(t, "127.0.0.1:0", false)
		a, r := restartedSession(t, up, func(c *client) {
			c.send(t, wgtest.Initiation(idA, 1))
			port := up.next(t).from
			up.sendTo(t, port, wgtest.Response(idA, 100, 1))
			c.mustRecv(t)
		})
		k := r.relay.Counters()
		b := newClient(t, "127.0.0.1:0", a.to)
		b.send(t, wgtest.Transport(idA, 5, 1, 64)) // not a learned index
		eventually(t, "the forged transport to be dropped", func() bool { return k.Dropped(stats.UnconfirmedTransport) == 1 })
		b.send(t, wgtest.Transport(idA, 100, 2, 64)) // the index the upstream answered with
		got := up.next(t)
		if got.from != r.port || !bytes.Equal(got.data, wgtest.Transport(idA, 100, 2, 64)) {
			t.Fatalf("the upstream got %x from %v, want the transport with the learned index from %v", got.data, got.from, r.port)
		}
		reply := wgtest.Transport(idA, 7, 1, 64)
		up.sendTo(t, r.port, reply)
		if got := b.mustRecv(t); !bytes.Equal(got, reply) {
			t.Fatalf("the roamed client got %x, want the reply", got)
		}
		if _, ok := a.recv(50 * time.Millisecond); ok {
			t.Fatal("the old port still gets replies")
		}
	})
}

// restarted is a relay that restored one session, and that session's
// upstream port.
type restarted struct {
	relay *relay.Relay
	port  netip.AddrPort
}

// restartedSession opens idA's session through a relay in front of up
// (open drives it from the client), saves it with Snapshot, closes the
// relay and restores the session into a new one. It returns the client,
// now pointed at the new relay.
func restartedSession(t *testing.T, up *upstream, open func(*client)) (*client, restarted) {
	t.Helper()
	first, err := relay.Start(relayConfig(t, up.addr(), nil, "127.0.0.1:0"), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, "127.0.0.1:0", first.ListenAddrs()[0])
	open(c)
	saved, err := first.Snapshot(waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if len(saved) != 1 {
		t.Fatalf("snapshot holds %d sessions, want 1", len(saved))
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t)
	system := relay.NewSystem(log)
	t.Cleanup(system.Shutdown)
	ev := watchSystem(t, system)
	second, err := relay.Start(relayConfig(t, up.addr(), nil, "127.0.0.1:0"), log, relay.WithSystem(system), relay.WithRestore(saved))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { second.Close() })
	e := await[*messages.SessionRestored](t, ev)
	if e.Rebound {
		t.Fatalf("the session was restored on a new port: %s", e.Err)
	}
	c.to = second.ListenAddrs()[0]
	return c, restarted{relay: second, port: e.UpstreamLocal}
}
