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
}
