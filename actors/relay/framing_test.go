package relay_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// warpTyped is a datagram of the official WARP client's framing as nDPI
// reports it: type byte 0xc1, a client ID, 64 bytes.
func warpTyped(id wgproto.ClientID) []byte {
	b := wgtest.Transport(id, 9, 1, 64)
	b[0] = 0xc1
	return b
}

// A type-0xc1 datagram is dropped and counted as warp_type with
// message_types: strict (the default), and forwarded for its client ID,
// opening its session, with any (the seed's rule); that session then
// follows its client's newest address.
func TestMessageTypes(t *testing.T) {
	id := wgproto.ClientID{0xc1, 0x00, 0x01}
	t.Run("strict", func(t *testing.T) {
		up := newUpstream(t, "127.0.0.1:0", true)
		r := startConfig(t, relayConfig(t, up.addr(), nil, "127.0.0.1:0"))
		c := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
		k := r.Counters()
		c.send(t, warpTyped(id))
		eventually(t, "the datagram to be dropped as warp_type", func() bool { return k.Dropped(stats.WARPType) == 1 })
		// Dropped where it arrived: it is the relay's only datagram.
		if k.TotalDropped() != 1 || k.Datagrams(stats.ToUpstream) != 0 || k.Live() != 0 {
			t.Errorf("dropped %d, to upstream %d, sessions %d; want the one drop and nothing else",
				k.TotalDropped(), k.Datagrams(stats.ToUpstream), k.Live())
		}
		select {
		case got := <-up.in:
			t.Errorf("the upstream received %x", got.data)
		default:
		}
	})
	t.Run("any", func(t *testing.T) {
		up := newUpstream(t, "127.0.0.1:0", true)
		r := startConfig(t, relayConfig(t, up.addr(), func(c *config.Relay) { c.MessageTypes = config.MessageTypesAny }, "127.0.0.1:0"))
		evs := watchEvents(t, r)
		c := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
		msg := warpTyped(id)
		c.send(t, msg)
		if got := up.next(t); !bytes.Equal(got.data, msg) {
			t.Fatalf("the upstream received %x, want the datagram as it was sent", got.data)
		}
		if got := c.mustRecv(t); !bytes.Equal(got, msg) {
			t.Fatalf("the client received %x, want the echo", got)
		}
		if o := await[*messages.SessionOpened](t, evs); o.Client != id {
			t.Errorf("session opened for %v, want %v", o.Client, id)
		}
		// The session follows the newest address: a datagram of the same
		// client from another port moves it, without any WireGuard
		// evidence (README, Security).
		c2 := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
		c2.send(t, msg)
		if got := c2.mustRecv(t); !bytes.Equal(got, msg) {
			t.Fatalf("the client's new port received %x, want the echo", got)
		}
		if m := await[*messages.ClientRoamed](t, evs); m.ClientAddr != c2.addr() || !m.Followed {
			t.Errorf("roamed to %v (followed %v), want %v, followed", m.ClientAddr, m.Followed, c2.addr())
		}
		if _, ok := c.recv(100 * time.Millisecond); ok {
			t.Error("the old port still gets replies")
		}
		if k := r.Counters(); k.TotalDropped() != 0 {
			t.Errorf("dropped %d datagrams", k.TotalDropped())
		}
	})
	// Only the client itself, from its confirmed address, turns a session
	// of well-formed WireGuard into one that follows the newest address:
	// the same datagram from anyone else is forwarded but moves nothing.
	t.Run("any, from elsewhere", func(t *testing.T) {
		up := newUpstream(t, "127.0.0.1:0", false)
		r := startConfig(t, relayConfig(t, up.addr(), func(c *config.Relay) { c.MessageTypes = config.MessageTypesAny }, "127.0.0.1:0"))
		evs := watchEvents(t, r)
		c := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
		attacker := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
		c.send(t, wgtest.Initiation(id, 5))
		port := up.next(t).from
		up.sendTo(t, port, wgtest.Response(id, 77, 5)) // the upstream answers: roaming needs evidence now
		c.mustRecv(t)
		await[*messages.SessionOpened](t, evs)

		attacker.send(t, warpTyped(id))
		if got := up.next(t); !bytes.Equal(got.data, warpTyped(id)) {
			t.Fatalf("upstream got %x, want the attacker's datagram forwarded", got.data)
		}
		reply := wgtest.Transport(id, 5, 1, 64)
		up.sendTo(t, port, reply)
		if got := c.mustRecv(t); !bytes.Equal(got, reply) {
			t.Fatalf("client got %x, want the reply", got)
		}
		if _, ok := attacker.recv(100 * time.Millisecond); ok {
			t.Fatal("the attacker got a reply")
		}

		c.send(t, warpTyped(id)) // the client itself: from now on the session follows
		up.next(t)
		attacker.send(t, warpTyped(id))
		up.next(t)
		up.sendTo(t, port, reply)
		if got := attacker.mustRecv(t); !bytes.Equal(got, reply) {
			t.Fatalf("attacker got %x, want the reply: the session follows the newest address", got)
		}
	})
}
