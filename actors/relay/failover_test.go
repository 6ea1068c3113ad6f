package relay_test

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// retryGap is how long after its previous initiation a client's next one
// counts as a retry (session.minRetry, 4 s), with a margin.
const retryGap = 4200 * time.Millisecond

// A session whose initiations go unanswered stays on an endpoint that
// answers another session, its waiting initiation sent there; once the
// endpoint answers nobody it is marked down and the session moves, the
// waiting initiation going to the other endpoint from a new socket at once.
func TestFailoverOnlyOffADownEndpoint(t *testing.T) {
	upA, upB := poolSocket(t), poolSocket(t)
	a, b := netip.MustParseAddrPort(upA.LocalAddr().String()), netip.MustParseAddrPort(upB.LocalAddr().String())
	r := poolRelay(t, []string{"127.0.0.1:0"}, []netip.AddrPort{a, b}, func(c *config.Relay) { c.FailoverAfter = 2 })
	events := recordPoolEvents(t, r)
	to := r.ListenAddrs()[0]
	c1, c2 := poolSocket(t), poolSocket(t)
	id1, id2 := wgproto.ClientID{0xfa, 0x11, 0x01}, wgproto.ClientID{0xfa, 0x11, 0x02}
	send := func(c interface {
		WriteToUDPAddrPort([]byte, netip.AddrPort) (int, error)
	}, b []byte) {
		t.Helper()
		if _, err := c.WriteToUDPAddrPort(b, to); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(want []byte) netip.AddrPort {
		t.Helper()
		got, from := poolRecv(t, upA)
		if !bytes.Equal(got, want) {
			t.Fatalf("endpoint A got %x..., want %x...", got[:8], want[:8])
		}
		return from
	}
	// Session 1 on A, answered: A is alive and has a round trip.
	answer := func(id wgproto.ClientID, receiver uint32, session netip.AddrPort) {
		t.Helper()
		if _, err := upA.WriteToUDPAddrPort(wgtest.Response(id, 900+receiver, receiver), session); err != nil {
			t.Fatal(err)
		}
		poolRecv(t, c1) // forwarded: the session has seen it, and told the supervisor
	}
	i := wgtest.Initiation(id1, 100)
	send(c1, i)
	s1 := expect(i)
	answer(id1, 100, s1)

	// Session 2 on A too, never answered.
	i = wgtest.Initiation(id2, 200)
	send(c2, i)
	s2 := expect(i)
	time.Sleep(retryGap) // the client's retry, as WireGuard's 5 s later
	i = wgtest.Initiation(id2, 201)
	send(c2, i)
	expect(i) // one unanswered
	// Session 1 hand-shakes again, answered: A answers others.
	i = wgtest.Initiation(id1, 101)
	send(c1, i)
	expect(i)
	answer(id1, 101, s1)
	time.Sleep(retryGap)
	i = wgtest.Initiation(id2, 202)
	send(c2, i)
	if from := expect(i); from != s2 { // two unanswered: it asked, and stays
		t.Fatalf("session 2 sent from %v, want %v", from, s2)
	}
	if moved := poolSeen[*messages.SessionMoved](events); len(moved) != 0 {
		t.Fatalf("a session moved off an endpoint that answers others: %+v", moved)
	}

	// Nobody's answer comes: the next unanswered initiation marks A down,
	// and session 2 moves to B with the initiation it waited with.
	time.Sleep(retryGap)
	i = wgtest.Initiation(id2, 203)
	send(c2, i)
	got, from := poolRecv(t, upB)
	if !bytes.Equal(got, i) || from == s2 {
		t.Fatalf("endpoint B got %x... from %v; want the waiting initiation from a new socket (not %v)", got[:8], from, s2)
	}
	down := poolSeen[*messages.EndpointDown](events)
	moved := poolSeen[*messages.SessionMoved](events)
	if len(down) != 1 || down[0].Endpoint != a.String() || len(moved) != 1 || moved[0].Client != id2 ||
		moved[0].FromEndpoint != a.String() || moved[0].Endpoint != b.String() || moved[0].UpstreamLocal != from || moved[0].Unanswered != 3 {
		t.Fatalf("down %+v, moved %+v", down, moved)
	}
	// Session 1, on an endpoint now down, has not moved: it asks only when
	// its own initiations go unanswered.
	if s := poolSession(t, r, [3]byte(id1)); s.Endpoint != a.String() || s.UpstreamLocal != s1 {
		t.Fatalf("session 1 is on %s from %v, want %v from %v", s.Endpoint, s.UpstreamLocal, a, s1)
	}
}
