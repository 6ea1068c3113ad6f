package relay_test

import (
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/actors/messages"

	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// TestSessionCountersMatchRelay: the sessions' own counters and the
// relay-wide ones count the same datagrams and bytes at the same points,
// in every direction, a datagram the session drops included. Every count
// moves before the datagram is passed on (or its drop is counted), so once
// a client has its replies, both are complete.
func TestSessionCountersMatchRelay(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0", true)
	r := startRelay(t, "127.0.0.1:0", up.addr(), 0)
	var clients []*client
	for i, id := range [][3]byte{idA, idB} {
		c := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
		clients = append(clients, c)
		c.send(t, wgtest.Initiation(id, 1))
		c.mustRecv(t)
		for n := range 3 + i {
			c.send(t, wgtest.Transport(id, 1, uint64(n), 64+32*n))
			c.mustRecv(t)
		}
	}
	// The echo brings a handshake response from upstream: from then on,
	// idA's session drops a transport from an address it has not confirmed,
	// after counting it as it arrived.
	clients[0].send(t, wgtest.Response(idA, 77, 1))
	clients[0].mustRecv(t)
	stranger := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	stranger.send(t, wgtest.Transport(idA, 999, 1, 96))
	eventually(t, "the stranger's transport dropped", func() bool {
		return r.Counters().Dropped(stats.UnconfirmedTransport) == 1
	})
	l, err := r.Sessions(waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Sessions) != 2 {
		t.Fatalf("%d sessions, want 2", len(l.Sessions))
	}
	var datagrams, bytes [stats.NumDirections]uint64
	for _, s := range l.Sessions {
		for d := range stats.NumDirections {
			datagrams[d] += s.Stats.Datagrams[d]
			bytes[d] += s.Stats.Bytes[d]
		}
	}
	k := r.Counters()
	for d := range stats.NumDirections {
		dir := stats.Direction(d)
		if datagrams[d] != k.Datagrams(dir) || bytes[d] != k.Bytes(dir) {
			t.Errorf("%s: sessions count %d datagrams, %d bytes; the relay %d, %d",
				dir, datagrams[d], bytes[d], k.Datagrams(dir), k.Bytes(dir))
		}
	}
	if datagrams[stats.FromClient] != 2+3+4+1+1 || datagrams[stats.ToClient] != 2+3+4+1 {
		t.Errorf("%d datagrams from clients and %d to them, want 11 and 10", datagrams[stats.FromClient], datagrams[stats.ToClient])
	}
}

// TestIdleClockIgnoresUnconfirmed: a datagram that carries a client's ID
// from an address the session has not confirmed is forwarded and counted,
// but does not move the idle clock (LastClient) that the session expires
// by and the session API shows: anyone could send it.
func TestIdleClockIgnoresUnconfirmed(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0", false)
	r := startRelay(t, "127.0.0.1:0", up.addr(), 0)
	home := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	home.send(t, wgtest.Initiation(idA, 1))
	first := up.next(t)
	// The upstream answers: from now on a new address must prove itself.
	up.sendTo(t, first.from, wgtest.Response(idA, 50, 1))
	home.mustRecv(t)
	before := onlySession(t, r)

	stranger := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	stranger.send(t, wgtest.Initiation(idA, 9))
	if got := up.next(t); got.from != first.from {
		t.Fatalf("the stranger's initiation reached the upstream from %v, want the session's %v", got.from, first.from)
	}
	after := onlySession(t, r)
	if !after.LastClient.Equal(before.LastClient) {
		t.Errorf("LastClient moved from %v to %v for a datagram from an unconfirmed address", before.LastClient, after.LastClient)
	}
	if after.Datagrams[stats.FromClient] != before.Datagrams[stats.FromClient]+1 {
		t.Errorf("from_client %d, want %d: the datagram is counted all the same",
			after.Datagrams[stats.FromClient], before.Datagrams[stats.FromClient]+1)
	}

	home.send(t, wgtest.Transport(idA, 50, 1, 64))
	up.next(t)
	if last := onlySession(t, r).LastClient; !last.After(before.LastClient) {
		t.Errorf("LastClient %v did not move for the confirmed address (was %v)", last, before.LastClient)
	}
}

// onlySession returns the stats of the relay's one session.
func onlySession(t *testing.T, r interface {
	Sessions(time.Duration) (*messages.SessionList, error)
}) stats.SessionSnapshot {
	t.Helper()
	l, err := r.Sessions(waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Sessions) != 1 {
		t.Fatalf("%d sessions, want 1", len(l.Sessions))
	}
	return l.Sessions[0].Stats
}
