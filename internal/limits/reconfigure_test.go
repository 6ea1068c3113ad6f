package limits_test

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/udpfwd/udpfwd/internal/limits"
)

// A reload changes the caps in place: what is held still counts, a lower
// cap evicts no one but refuses new sessions until enough have ended, and
// a source's rate limiter refills at the new rate.
func TestCapsReconfigure(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	c := limits.NewCaps(limits.CapsConfig{MaxSessions: 3, SourceRate: 1, SourceBurst: 1})
	for _, ip := range []netip.Addr{a, b} {
		if reason, ok := c.Admit(ip, t0); !ok {
			t.Fatalf("Admit(%v): %s", ip, reason)
		}
	}
	// Down to 1: both stay counted, a third is refused.
	c.Reconfigure(limits.CapsConfig{MaxSessions: 1, SourceRate: 1, SourceBurst: 1}, t0)
	if total, _ := c.Sessions(a); total != 2 {
		t.Fatalf("after the reload %d sessions counted, want the 2 held", total)
	}
	if reason, ok := c.Admit(netip.MustParseAddr("192.0.2.3"), t0.Add(time.Hour)); ok || reason != limits.ReasonMaxSessions {
		t.Fatalf("over the lowered cap: %q, %v; want %s", reason, ok, limits.ReasonMaxSessions)
	}
	c.Release(a)
	c.Release(b)
	// a spent its one token at t0; at 1/s it would have one again at t0+1s.
	// At a new rate of 1 per hour it has none then.
	c.Reconfigure(limits.CapsConfig{MaxSessions: 1, SourceRate: rate.Every(time.Hour), SourceBurst: 1}, t0)
	if reason, ok := c.Admit(a, t0.Add(time.Second)); ok || reason != limits.ReasonNewSessionRate {
		t.Fatalf("at the lowered rate: %q, %v; want %s", reason, ok, limits.ReasonNewSessionRate)
	}
	// No rate at all: admitted, and no limiter is kept.
	c.Reconfigure(limits.CapsConfig{MaxSessions: 1}, t0)
	if reason, ok := c.Admit(a, t0.Add(time.Second)); !ok {
		t.Fatalf("without a rate: refused, %s", reason)
	}
	if n := c.TrackedSources(); n != 0 {
		t.Errorf("%d rate limiters kept without a rate", n)
	}
}
