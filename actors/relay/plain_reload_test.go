package relay_test

import (
	"bytes"
	"testing"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// A reload that turns zero_id to drop ends the live plain sessions (their
// datagrams could reach them no more) and drops plain clients from then
// on; one back to track serves them again. Sessions of client IDs stay.
func TestReloadZeroID(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0", true)
	track := relayConfig(t, up.addr(), func(c *config.Relay) { c.ZeroID = config.ZeroIDTrack }, "127.0.0.1:0")
	r := startConfig(t, track)
	evs := watchEvents(t, r)
	plain := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	withID := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	zero := wgproto.ClientID{}
	for i, c := range []*client{plain, withID} {
		id := []wgproto.ClientID{zero, {0x0a, 0x0b, 0x0c}}[i]
		init := wgtest.Initiation(id, uint32(100+i))
		c.send(t, init)
		if got := c.mustRecv(t); !bytes.Equal(got, init) {
			t.Fatalf("client %d: got %x, want its initiation echoed", i, got)
		}
		if o := await[*messages.SessionOpened](t, evs); o.Client != id {
			t.Fatalf("opened %v, want %v", o.Client, id)
		}
	}

	drop := track
	drop.ZeroID = config.ZeroIDDrop
	if err := r.Reconfigure(drop); err != nil {
		t.Fatal(err)
	}
	if c := await[*messages.SessionClosed](t, evs); !c.Client.IsZero() {
		t.Fatalf("closed the session of %v, want the plain one", c.Client)
	}
	k := r.Counters()
	plain.send(t, wgtest.Transport(zero, 100, 1, 64))
	eventually(t, "the plain client's datagram to be dropped", func() bool { return k.Dropped(stats.ZeroClientID) == 1 })
	msg := wgtest.Transport(wgproto.ClientID{0x0a, 0x0b, 0x0c}, 100, 1, 64)
	withID.send(t, msg)
	if got := withID.mustRecv(t); !bytes.Equal(got, msg) {
		t.Fatalf("the ID client's session: got %x", got)
	}

	if err := r.Reconfigure(track); err != nil {
		t.Fatal(err)
	}
	init := wgtest.Initiation(zero, 200)
	plain.send(t, init)
	if got := plain.mustRecv(t); !bytes.Equal(got, init) {
		t.Fatalf("after tracking again: got %x", got)
	}
	if o := await[*messages.SessionOpened](t, evs); !o.Client.IsZero() {
		t.Fatalf("opened %v, want a plain session", o.Client)
	}
	if k.Live() != 2 {
		t.Errorf("%d sessions, want the ID client's and the new plain one", k.Live())
	}
}
