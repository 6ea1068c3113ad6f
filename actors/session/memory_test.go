package session

import (
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/udpfwd/udpfwd/internal/limits"
)

// A Session is part of every idle session: what an idle session rarely
// needs is allocated when it is needed, not kept in the struct. 768 bytes
// is a size class of Go's allocator: a byte more costs 128. (The poller's
// registration, Reader, took it from 640 to 672, and the highest transport
// counter kept per learned index, roam.Peer, to 752.)
func TestSessionSize(t *testing.T) {
	if size := unsafe.Sizeof(Session{}); size > 768 {
		t.Errorf("a Session takes %d bytes, want at most 768", size)
	}
}

// The unconfirmed budgets exist from the first datagram from an
// unconfirmed address until every budget is full again, and a table made
// anew gives an address the full budget it would have had.
func TestUnconfirmedBudgetsComeAndGo(t *testing.T) {
	var s Session
	ip := netip.MustParseAddr("198.51.100.7")
	burst := limits.Unconfirmed().DatagramBurst
	for i := range burst {
		if !s.allowUnconfirmed(t0, ip, 148) {
			t.Fatalf("datagram %d of a burst of %d refused", i, burst)
		}
	}
	if s.allowUnconfirmed(t0, ip, 148) {
		t.Fatal("the budget let a datagram past its burst")
	}
	s.trimUnconfirmed(t0.Add(unconfirmedRefill - time.Millisecond))
	if s.unconfirmed == nil {
		t.Fatal("a budget still refilling was dropped")
	}
	s.trimUnconfirmed(t0.Add(unconfirmedRefill))
	if s.unconfirmed != nil {
		t.Fatal("the budgets outlived their refill")
	}
	for i := range burst {
		if !s.allowUnconfirmed(t0.Add(unconfirmedRefill), ip, 148) {
			t.Fatalf("after the refill, datagram %d of a burst of %d refused", i, burst)
		}
	}
}

// A client without a rate limit holds no limiters.
func TestLimitsOnlyWhenLimited(t *testing.T) {
	var s Session
	s.applyLimits(limits.Limits{}, t0)
	if s.limits != nil {
		t.Fatal("an unlimited client has limiters")
	}
	s.applyLimits(limits.Limits{DatagramsPerSecond: 1, DatagramBurst: 1}, t0)
	if s.limits == nil || !s.limits.up.Allow(t0, 64) || s.limits.up.Allow(t0, 64) {
		t.Fatal("the limit is not enforced")
	}
	s.applyLimits(limits.Limits{}, t0)
	if s.limits != nil {
		t.Fatal("lifting the limit kept the limiters")
	}
}

// A Spawner's props hand protoactor the session being spawned, and
// nothing that could be mistaken for one outside Spawn.
func TestSpawnerProduces(t *testing.T) {
	sp := NewSpawner()
	if _, ok := sp.produce().(nothing); !ok {
		t.Errorf("outside Spawn the producer made %T, want nothing", sp.produce())
	}
	s := &Session{}
	sp.next = s
	if got := sp.produce(); got != s {
		t.Errorf("during Spawn the producer made %v, want the session being spawned", got)
	}
}
