package roam_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/roam"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Client endpoints of the scenarios. Addresses are documentation ranges;
// nothing is sent anywhere.
const (
	A  = iota // the address that opened the session
	B         // the same client after a NAT rebinding
	C         // an attacker
	A1        // A's address, but sent to the relay's second listening socket
	up = -1   // the upstream
)

type ep struct {
	addr     netip.AddrPort
	listener uint8
}

// endpoints returns A, B, C, A1 and then n more distinct addresses.
func endpoints(n int) []ep {
	eps := []ep{
		{netip.MustParseAddrPort("192.0.2.1:1000"), 0},
		{netip.MustParseAddrPort("192.0.2.1:2000"), 0},
		{netip.MustParseAddrPort("198.51.100.7:3000"), 0},
		{netip.MustParseAddrPort("192.0.2.1:1000"), 1},
	}
	for i := range n {
		eps = append(eps, ep{netip.AddrPortFrom(netip.MustParseAddr("203.0.113.9"), uint16(4000+i)), 0})
	}
	return eps
}

func tr(receiver uint32) wgproto.Header {
	return wgproto.Header{Type: wgproto.TypeTransport, Index: receiver}
}
func ini(sender uint32) wgproto.Header {
	return wgproto.Header{Type: wgproto.TypeInitiation, Index: sender}
}
func resp(sender, receiver uint32) wgproto.Header {
	return wgproto.Header{Type: wgproto.TypeResponse, Index: sender, Receiver: receiver}
}
func cookie(receiver uint32) wgproto.Header {
	return wgproto.Header{Type: wgproto.TypeCookie, Index: receiver}
}

// step is one datagram. For client steps (from >= 0) moved is what
// FromClient must report; for upstream steps (from == up) to is the
// endpoint the reply must go to and moved what FromUpstream must report.
type step struct {
	at    time.Duration // since the start
	from  int
	h     wgproto.Header
	to    int
	moved bool
}

// c and u build client and upstream steps at time zero.
func c(from int, h wgproto.Header, moved bool) step { return step{from: from, h: h, moved: moved} }
func u(h wgproto.Header, to int, moved bool) step   { return step{from: up, h: h, to: to, moved: moved} }
func at(d time.Duration, s step) step               { s.at = d; return s }

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func run(t *testing.T, p *roam.Peer, eps []ep, steps []step) {
	t.Helper()
	for i, s := range steps {
		now := t0.Add(s.at)
		if s.from == up {
			to, via, moved, ok := p.FromUpstream(now, s.h)
			if !ok {
				t.Fatalf("step %d (%v from upstream): no address", i, s.h.Type)
			}
			want := eps[s.to]
			if to != want.addr || via != want.listener || moved != s.moved {
				t.Fatalf("step %d (%v %d/%d from upstream): to %v via %d moved %v, want %v via %d moved %v",
					i, s.h.Type, s.h.Index, s.h.Receiver, to, via, moved, want.addr, want.listener, s.moved)
			}
			continue
		}
		from := eps[s.from]
		if moved := p.FromClient(now, s.h, from.addr, from.listener); moved != s.moved {
			t.Fatalf("step %d (%v %d from endpoint %d): moved %v, want %v", i, s.h.Type, s.h.Index, s.from, moved, s.moved)
		}
	}
}

func TestRules(t *testing.T) {
	many := func(first, n int, h wgproto.Header) []step {
		var s []step
		for i := range n {
			h := h
			h.Index += uint32(i)
			s = append(s, c(first+i, h, false))
		}
		return s
	}
	cat := func(parts ...[]step) []step {
		var s []step
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first address is confirmed", []step{
			c(A, tr(1), false), u(tr(9), A, false),
		}},
		{"forged transport with an unknown index moves nothing", []step{
			c(A, ini(1), false), u(resp(100, 1), A, false),
			c(C, tr(101), false), c(C, tr(0), false), u(tr(9), A, false),
		}},
		{"rule a: keepalive with a learned index moves", []step{
			c(A, ini(1), false), u(resp(100, 1), A, false),
			c(B, tr(100), true), u(tr(9), B, false),
			c(B, tr(100), false),
		}},
		{"rule a: a new listening socket is a new address", []step{
			c(A, ini(1), false), u(resp(100, 1), A, false),
			c(A1, tr(101), false), u(tr(9), A, false),
			c(A1, tr(100), true), u(tr(9), A1, false),
		}},
		{"rule a: the index must be learned before", []step{
			c(A, tr(5), false), c(B, tr(100), false), u(resp(100, 1), A, false), u(tr(9), A, false),
		}},
		{"rule a: moving back", []step{
			c(A, ini(1), false), u(resp(100, 1), A, false),
			c(B, tr(100), true), c(A, tr(100), true), u(tr(9), A, false),
		}},
		{"rule a: an upstream-initiated handshake's index counts", []step{
			c(A, tr(5), false), u(ini(300), A, false), c(A, resp(2, 300), false),
			c(B, tr(300), true), u(tr(9), B, false),
		}},
		{"rule a: a pending initiation's index is not a learned index", []step{
			c(A, tr(5), false), c(C, ini(7), false), c(C, tr(7), false), u(tr(9), A, false),
		}},
		{"rule b: the response to a new address's initiation moves", []step{
			c(A, tr(5), false), c(B, ini(7), false), u(tr(9), A, false),
			u(resp(200, 7), B, true), u(tr(9), B, false),
		}},
		{"rule b: the new index is learned too", []step{
			c(A, tr(5), false), c(B, ini(7), false), u(resp(200, 7), B, true),
			c(A, tr(200), true), u(tr(9), A, false),
		}},
		{"rule b: an unanswered initiation moves nothing", []step{
			c(A, tr(5), false), c(C, ini(7), false), u(resp(200, 8), A, false), u(tr(9), A, false),
		}},
		{"rule b: a response to the confirmed address's initiation stays", []step{
			c(A, ini(7), false), u(resp(200, 7), A, false), u(tr(9), A, false),
		}},
		{"rule b: a response is used once", []step{
			c(A, tr(5), false), c(B, ini(7), false), u(resp(200, 7), B, true),
			c(A, tr(200), true), u(resp(201, 7), A, false),
		}},
		{"rule b: a newer initiation from the same address replaces the older", []step{
			c(A, tr(5), false), c(B, ini(7), false), c(B, ini(8), false),
			u(resp(200, 7), A, false), u(resp(201, 8), B, true),
		}},
		{"rule b: two addresses claiming one index move nothing", []step{
			c(A, tr(5), false), c(B, ini(7), false), c(C, ini(7), false),
			u(resp(200, 7), A, false), u(tr(9), A, false),
		}},
		{"rule b: a guessed index of the confirmed address's initiation moves nothing", []step{
			c(A, ini(7), false), c(C, ini(7), false), u(resp(200, 7), A, false), u(tr(9), A, false),
		}},
		{"rule b: a pending initiation expires", []step{
			c(A, tr(5), false), c(B, ini(7), false),
			at(roam.PendingMaxAge, u(resp(200, 7), A, false)),
		}},
		{"rule b: a pending initiation is live just before it expires", []step{
			c(A, tr(5), false), c(B, ini(7), false),
			at(roam.PendingMaxAge-time.Millisecond, u(resp(200, 7), B, true)),
		}},
		{"rule b: a flood of initiations from many addresses evicts, but never moves", cat(
			[]step{c(A, tr(5), false), c(B, ini(7), false)},
			many(A1+1, roam.MaxPending, ini(1000)),
			[]step{u(resp(200, 7), A, false), u(tr(9), A, false)},
		)},
		{"rule b: a flood from one address takes one slot", cat(
			[]step{c(A, tr(5), false), c(B, ini(7), false)},
			[]step{c(C, ini(1000), false), c(C, ini(1001), false), c(C, ini(1002), false), c(C, ini(1003), false),
				c(C, ini(1004), false), c(C, ini(1005), false), c(C, ini(1006), false), c(C, ini(1007), false),
				c(C, ini(1008), false)},
			[]step{u(resp(200, 7), B, true)},
		)},
		{"rule b: expired slots are reused before live ones", cat(
			[]step{c(A, tr(5), false)},
			many(A1+1, roam.MaxPending-1, ini(1000)),
			[]step{at(roam.PendingMaxAge, c(B, ini(7), false))},
			[]step{at(roam.PendingMaxAge, c(C, ini(8), false))},
			[]step{at(roam.PendingMaxAge, u(resp(200, 7), B, true))},
		)},
		{"cookie to a pending initiation goes there without confirming", []step{
			c(A, tr(5), false), c(B, ini(7), false),
			u(cookie(7), B, false), u(tr(9), A, false),
			u(resp(200, 7), A, false), // the cookie ended that initiation
		}},
		{"cookie without a pending initiation goes to the confirmed address", []step{
			c(A, tr(5), false), c(B, ini(7), false), u(cookie(8), A, false),
		}},
		{"cookie for a colliding index goes to the confirmed address", []step{
			c(A, tr(5), false), c(B, ini(7), false), c(C, ini(7), false), u(cookie(7), A, false),
		}},
		{"responses and cookies sent by clients move nothing", []step{
			c(A, ini(1), false), u(resp(100, 1), A, false),
			c(C, resp(100, 1), false), c(C, cookie(100), false), c(C, wgproto.Header{Index: 100}, false),
			u(tr(9), A, false),
		}},
		{"a learned index lives IndexMaxAge", []step{
			c(A, ini(1), false), u(resp(100, 1), A, false),
			at(roam.IndexMaxAge-time.Millisecond, c(B, tr(100), true)),
		}},
		{"a learned index ages out", []step{
			c(A, ini(1), false), u(resp(100, 1), A, false),
			at(roam.IndexMaxAge, c(B, tr(100), false)),
			at(roam.IndexMaxAge, u(tr(9), A, false)),
		}},
		{"the oldest learned index is evicted", []step{
			c(A, tr(5), false),
			u(resp(100, 1), A, false), at(1, u(resp(101, 1), A, false)), at(2, u(resp(102, 1), A, false)),
			at(3, u(resp(103, 1), A, false)), at(4, u(resp(104, 1), A, false)), at(5, u(resp(105, 1), A, false)),
			at(6, u(resp(106, 1), A, false)), at(7, u(resp(107, 1), A, false)), at(8, u(resp(108, 1), A, false)),
			at(9, c(B, tr(100), false)), at(9, c(B, tr(101), true)), at(9, c(A, tr(108), true)),
		}},
		{"relearning an index refreshes it", []step{
			c(A, tr(5), false), u(resp(100, 1), A, false),
			at(roam.IndexMaxAge/2, u(resp(100, 1), A, false)),
			at(roam.IndexMaxAge, c(B, tr(100), true)),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Each scenario starts in a session opened by A whose upstream
			// has answered a handshake, where the rules apply.
			eps := endpoints(roam.MaxPending)
			var p roam.Peer
			if err := p.Restore(roam.State{Addr: eps[A].addr, Listener: eps[A].listener, Answered: true}); err != nil {
				t.Fatal(err)
			}
			run(t, &p, eps, tt.steps)
		})
	}
}

// TestBeforeTheFirstResponse: until the upstream has answered a handshake
// the session follows the newest address; the first response ends that.
func TestBeforeTheFirstResponse(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
	}{
		{"an echo upstream: replies follow every move", []step{
			c(A, ini(1), false), u(ini(1), A, false), c(A, tr(5), false), u(tr(5), A, false),
			c(B, tr(5), true), u(tr(5), B, false), c(A1, tr(5), true), u(tr(5), A1, false),
			c(C, wgproto.Header{}, true), c(B, ini(2), true), u(ini(2), B, false),
		}},
		{"the first response goes to the address whose initiation it answers, then the rules hold", []step{
			c(A, ini(1), false), c(C, ini(9), true), c(C, tr(5), false),
			u(resp(100, 1), A, true),
			c(C, tr(5), false), c(C, ini(3), false), u(tr(7), A, false),
			c(B, tr(100), true), u(tr(7), B, false),
		}},
		{"a response to nobody's initiation ends following too", []step{
			c(A, tr(5), false), u(resp(100, 42), A, false),
			c(C, tr(5), false), u(tr(7), A, false),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p roam.Peer
			run(t, &p, endpoints(0), tt.steps)
		})
	}
}

// TestAnsweredSurvivesRestore: a restored session keeps the rules, and one
// that followed the newest address still does, learned indexes or not (an
// echoing upstream teaches the client's own initiation's index).
func TestAnsweredSurvivesRestore(t *testing.T) {
	eps := endpoints(0)
	for _, tt := range []struct {
		name     string
		st       roam.State
		followed bool
	}{
		{"answered", roam.State{Addr: eps[A].addr, Answered: true}, false},
		{"indexes learned, never answered", roam.State{Addr: eps[A].addr, Indexes: []roam.LearnedIndex{{Index: 100, Learned: t0}}}, true},
		{"never answered", roam.State{Addr: eps[A].addr}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var p roam.Peer
			if err := p.Restore(tt.st); err != nil {
				t.Fatal(err)
			}
			if moved := p.FromClient(t0, tr(5), eps[C].addr, eps[C].listener); moved != tt.followed {
				t.Fatalf("a transport from a new address moved=%v, want %v", moved, tt.followed)
			}
			if got := p.State().Answered; got == tt.followed {
				t.Fatalf("State().Answered = %v", got)
			}
		})
	}
}

// TestRestoreDecidesAsBefore: a Peer saved (State, through JSON, as the
// state file keeps it) and restored decides every later datagram as the
// Peer that saved it does: same moves, same reply addresses. The prefixes
// leave no pending initiation that the suffix's responses would take
// (Restore clears them: they live seconds, and clients retry).
func TestRestoreDecidesAsBefore(t *testing.T) {
	eps := endpoints(0)
	type d struct {
		from int // an endpoint, or up
		h    wgproto.Header
	}
	prefixes := map[string][]d{
		"an echo upstream":             {{A, ini(1)}, {up, ini(1)}, {A, tr(5)}, {up, tr(5)}},
		"an echo upstream, roamed":     {{A, ini(1)}, {up, ini(1)}, {B, tr(5)}, {up, tr(5)}},
		"a WireGuard upstream":         {{A, ini(1)}, {up, resp(100, 1)}, {A, tr(100)}, {up, tr(7)}},
		"a WireGuard upstream, roamed": {{A, ini(1)}, {up, resp(100, 1)}, {B, tr(100)}, {up, tr(7)}},
		"no reply yet":                 {{A, tr(5)}},
	}
	suffix := []d{
		{C, tr(5)}, {up, tr(5)}, {A1, tr(100)}, {up, tr(7)}, {C, ini(9)}, {up, cookie(9)},
		{B, ini(3)}, {up, resp(101, 3)}, {C, tr(101)}, {A, tr(101)}, {up, tr(7)}, {B, tr(5)}, {up, tr(5)},
	}
	for name, prefix := range prefixes {
		t.Run(name, func(t *testing.T) {
			var before roam.Peer
			feed := func(p *roam.Peer, x d, now time.Time) string {
				if x.from == up {
					to, via, moved, ok := p.FromUpstream(now, x.h)
					return fmt.Sprintf("to %v via %d moved %v ok %v", to, via, moved, ok)
				}
				return fmt.Sprintf("moved %v", p.FromClient(now, x.h, eps[x.from].addr, eps[x.from].listener))
			}
			for _, x := range prefix {
				feed(&before, x, t0)
			}
			b, err := json.Marshal(before.State())
			if err != nil {
				t.Fatal(err)
			}
			var st roam.State
			if err := json.Unmarshal(b, &st); err != nil {
				t.Fatal(err)
			}
			var after roam.Peer
			if err := after.Restore(st); err != nil {
				t.Fatal(err)
			}
			now := t0.Add(20 * time.Second) // past PendingMaxAge: the prefix's initiations are gone from both
			for i, x := range suffix {
				if got, want := feed(&after, x, now), feed(&before, x, now); got != want {
					t.Fatalf("datagram %d (%+v from %d) after the restore: %s; without the restart: %s", i, x.h, x.from, got, want)
				}
			}
		})
	}
}

// TestFollowing: a Peer follows the newest address until the upstream's
// first response, and in forward mode always.
func TestFollowing(t *testing.T) {
	eps := endpoints(0)
	var p roam.Peer
	p.FromClient(t0, ini(1), eps[A].addr, eps[A].listener)
	if !p.Following() {
		t.Fatal("not following before any response")
	}
	p.FromUpstream(t0, ini(1)) // an echo: no answer
	if !p.Following() {
		t.Fatal("not following after an echoed initiation")
	}
	p.FromUpstream(t0, resp(100, 1))
	if p.Following() {
		t.Fatal("following after the upstream's response")
	}
	f := roam.Peer{Forward: true}
	f.FromClient(t0, wgproto.Header{}, eps[A].addr, eps[A].listener)
	f.FromUpstream(t0, resp(100, 1))
	if !f.Following() {
		t.Fatal("a forward-mode Peer does not follow")
	}
}

func TestNoAddressYet(t *testing.T) {
	var p roam.Peer
	if _, _, _, ok := p.FromUpstream(t0, tr(1)); ok {
		t.Fatal("FromUpstream ok before any client datagram")
	}
	if p.Addr().IsValid() {
		t.Fatalf("Addr = %v before any client datagram", p.Addr())
	}
}

func TestConfirmed(t *testing.T) {
	eps := endpoints(0)
	var p roam.Peer
	p.FromClient(t0, ini(1), eps[A].addr, eps[A].listener)
	for i, want := range []bool{A: true, B: false, C: false, A1: false} {
		if got := p.Confirmed(eps[i].addr, eps[i].listener); got != want {
			t.Errorf("Confirmed(endpoint %d) = %v, want %v", i, got, want)
		}
	}
}

// TestForward: a forward-mode Peer follows the newest source, even after
// what would be a handshake response.
func TestForward(t *testing.T) {
	eps := endpoints(0)
	p := roam.Peer{Forward: true}
	run(t, &p, eps, []step{
		c(A, wgproto.Header{}, false), c(C, wgproto.Header{}, true), u(wgproto.Header{}, C, false),
		c(A1, wgproto.Header{}, true), c(A1, wgproto.Header{}, false), u(resp(1, 2), A1, false),
	})
}

func TestStateRoundTrip(t *testing.T) {
	eps := endpoints(0)
	var p roam.Peer
	run(t, &p, eps, []step{
		c(A, ini(1), false), u(resp(100, 1), A, false),
		c(A1, ini(2), false), at(time.Second, u(resp(101, 2), A1, true)),
		c(B, ini(3), false), // pending: not saved
	})
	st := p.State()
	if st.Addr != eps[A1].addr || st.Listener != eps[A1].listener || len(st.Indexes) != 2 ||
		st.Indexes[0].Index != 100 || st.Indexes[1].Index != 101 {
		t.Fatalf("State = %+v", st)
	}
	text, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back roam.State
	if err := json.Unmarshal(text, &back); err != nil {
		t.Fatal(err)
	}
	var q roam.Peer
	if err := q.Restore(back); err != nil {
		t.Fatal(err)
	}
	run(t, &q, eps, []step{
		at(time.Second, u(tr(9), A1, false)),
		at(time.Second, u(resp(200, 3), A1, false)), // pending was not restored
		at(time.Second, c(A, tr(100), true)),
		at(roam.IndexMaxAge, c(B, tr(100), false)),
		at(roam.IndexMaxAge, c(B, tr(101), true)),
	})
}

func TestRestore(t *testing.T) {
	a := netip.MustParseAddrPort("192.0.2.1:1000")
	var idx []roam.LearnedIndex
	for i := range roam.MaxIndexes + 3 {
		// Out of order, to check that the newest are kept.
		n := (i * 5) % (roam.MaxIndexes + 3)
		idx = append(idx, roam.LearnedIndex{Index: uint32(100 + n), Learned: t0.Add(time.Duration(n) * time.Second)})
	}
	tests := []struct {
		name    string
		st      roam.State
		err     error
		indexes []uint32
	}{
		{"no address", roam.State{Indexes: idx}, roam.ErrNoAddress, nil},
		{"no indexes", roam.State{Addr: a}, nil, nil},
		{"newest kept", roam.State{Addr: a, Listener: 2, Indexes: idx}, nil, []uint32{103, 104, 105, 106, 107, 108, 109, 110}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p roam.Peer
			err := p.Restore(tt.st)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			got := p.State()
			if got.Addr != tt.st.Addr || got.Listener != tt.st.Listener || len(got.Indexes) != len(tt.indexes) {
				t.Fatalf("State = %+v after Restore(%+v)", got, tt.st)
			}
			for i, l := range got.Indexes {
				if l.Index != tt.indexes[i] {
					t.Fatalf("indexes %+v, want %v", got.Indexes, tt.indexes)
				}
			}
		})
	}
}

func TestAllocs(t *testing.T) {
	eps := endpoints(roam.MaxPending)
	var p roam.Peer
	now := t0
	p.FromClient(now, ini(1), eps[A].addr, eps[A].listener)
	i := uint32(0)
	n := testing.AllocsPerRun(1000, func() {
		i++
		now = now.Add(time.Millisecond)
		e := eps[int(i)%len(eps)]
		p.FromClient(now, tr(100+i%4), eps[A].addr, eps[A].listener)
		p.FromClient(now, ini(i), e.addr, e.listener)
		p.FromClient(now, tr(i), e.addr, e.listener)
		p.FromUpstream(now, tr(1))
		p.FromUpstream(now, resp(100+i, i))
		p.FromUpstream(now, cookie(i))
		p.Confirmed(e.addr, e.listener)
	})
	if n != 0 {
		t.Fatalf("%v allocations per round, want 0", n)
	}
}

// learnedPeer is a Peer opened from endpoint A that has learned
// MaxIndexes indexes (100..), the steady state of a long session.
func learnedPeer() (*roam.Peer, []ep) {
	eps := endpoints(0)
	p := &roam.Peer{}
	p.FromClient(t0, ini(1), eps[A].addr, eps[A].listener)
	for i := range roam.MaxIndexes {
		p.FromUpstream(t0, resp(uint32(100+i), 1))
	}
	return p, eps
}

func BenchmarkFromClientTransport(b *testing.B) {
	p, eps := learnedPeer()
	b.ReportAllocs()
	for b.Loop() {
		p.FromClient(t0, tr(107), eps[A].addr, eps[A].listener)
	}
}

func BenchmarkFromClientRoamingAttempt(b *testing.B) {
	p, eps := learnedPeer()
	b.ReportAllocs()
	for b.Loop() {
		p.FromClient(t0, tr(99), eps[C].addr, eps[C].listener)
	}
}

func BenchmarkFromUpstream(b *testing.B) {
	eps := endpoints(0)
	var p roam.Peer
	p.FromClient(t0, ini(1), eps[A].addr, eps[A].listener)
	b.ReportAllocs()
	for b.Loop() {
		p.FromUpstream(t0, tr(1))
	}
}

func ExamplePeer() {
	var p roam.Peer
	now := time.Now()
	home := netip.MustParseAddrPort("192.0.2.1:1000")
	roamed := netip.MustParseAddrPort("192.0.2.1:2000")
	attacker := netip.MustParseAddrPort("198.51.100.7:3000")

	p.FromClient(now, wgproto.Header{Type: wgproto.TypeInitiation, Index: 1}, home, 0)
	p.FromUpstream(now, wgproto.Header{Type: wgproto.TypeResponse, Index: 77, Receiver: 1})

	fmt.Println(p.FromClient(now, wgproto.Header{Type: wgproto.TypeTransport, Index: 12345}, attacker, 0))
	fmt.Println(p.FromClient(now, wgproto.Header{Type: wgproto.TypeTransport, Index: 77}, roamed, 0))
	to, _, _, _ := p.FromUpstream(now, wgproto.Header{Type: wgproto.TypeTransport, Index: 5})
	fmt.Println(to)
	// Output:
	// false
	// true
	// 192.0.2.1:2000
}

// TestOvertakenTransport: a transport datagram the client sent from its old
// address before it moved, delivered after the datagrams from its new one
// (another relay node forwarded it late), does not move the session back;
// a newer one from the old address (the client moved back) does.
func TestOvertakenTransport(t *testing.T) {
	eps := endpoints(0)
	var p roam.Peer
	run(t, &p, eps, []step{c(A, ini(1), false), u(resp(77, 1), A, false)})
	for i, s := range []struct {
		from    int
		counter uint64
		moved   bool
		at      int // where replies go after it
	}{
		{A, 10, false, A},
		{B, 12, true, B},  // the client moved to B
		{A, 11, false, B}, // overtaken: sent from A before the move
		{B, 13, false, B},
		{A, 13, false, B}, // a copy of the newest, from elsewhere
		{A, 14, true, A},  // the client moved back
	} {
		e := eps[s.from]
		if moved := p.FromTransport(t0, tr(77), s.counter, e.addr, e.listener); moved != s.moved {
			t.Fatalf("datagram %d (counter %d from %v): moved %v, want %v", i, s.counter, e.addr, moved, s.moved)
		}
		if got := p.Addr(); got != eps[s.at].addr {
			t.Fatalf("datagram %d: replies go to %v, want %v", i, got, eps[s.at].addr)
		}
	}
}
