package session

import (
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/racecheck"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// A response is timed from the initiation whose sender index is its
// receiver index, once; the newest initiations are remembered.
func TestHandshakeClock(t *testing.T) {
	var c handshakeClock
	c.forwarded(1, t0)
	c.forwarded(2, t0.Add(time.Second))
	c.forwarded(1, t0.Add(2*time.Second)) // the same initiation again: timed from the newer copy
	if rtt, ok := c.answered(1, t0.Add(2*time.Second+30*time.Millisecond)); !ok || rtt != 30*time.Millisecond {
		t.Fatalf("answered(1) = %v, %v; want 30ms", rtt, ok)
	}
	if _, ok := c.answered(1, t0.Add(3*time.Second)); ok {
		t.Fatal("one initiation answered twice")
	}
	if _, ok := c.answered(9, t0.Add(3*time.Second)); ok {
		t.Fatal("a response to no initiation was timed")
	}
	// More initiations than the table holds push the oldest out.
	for i := range uint32(timedInitiations) {
		c.forwarded(100+i, t0.Add(4*time.Second))
	}
	if _, ok := c.answered(2, t0.Add(5*time.Second)); ok {
		t.Fatal("the oldest initiation is still remembered")
	}
	if rtt, ok := c.answered(100+timedInitiations-1, t0.Add(5*time.Second)); !ok || rtt != time.Second {
		t.Fatalf("the newest initiation: %v, %v; want 1s", rtt, ok)
	}
}

// Timing handshakes allocates nothing.
func TestHandshakeClockAllocs(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("allocation counts differ under -race")
	}
	var c handshakeClock
	i := uint32(0)
	if n := testing.AllocsPerRun(1000, func() {
		i++
		c.forwarded(i, t0)
		c.answered(i, t0.Add(time.Millisecond))
	}); n != 0 {
		t.Fatalf("%v allocations per handshake", n)
	}
}
