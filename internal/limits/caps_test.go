package limits_test

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/udpfwd/udpfwd/internal/limits"
)

func TestCaps(t *testing.T) {
	ip := netip.MustParseAddr
	// An op admits (release false) or releases (release true) a session
	// from ip at t0+at; want is the refusal reason ("" for admitted).
	type op struct {
		ip      string
		release bool
		at      time.Duration
		want    string
	}
	admit := func(addr, want string) op { return op{ip: addr, want: want} }
	release := func(addr string) op { return op{ip: addr, release: true} }
	tests := []struct {
		name string
		cfg  limits.CapsConfig
		ops  []op
	}{
		{"unlimited", limits.CapsConfig{}, []op{
			admit("192.0.2.1", ""), admit("192.0.2.1", ""), admit("192.0.2.1", ""),
		}},
		{"max sessions counts its own admissions", limits.CapsConfig{MaxSessions: 2}, []op{
			admit("192.0.2.1", ""), admit("192.0.2.2", ""), admit("192.0.2.3", limits.ReasonMaxSessions),
			release("192.0.2.1"), admit("192.0.2.3", ""), admit("192.0.2.4", limits.ReasonMaxSessions),
		}},
		{"per source", limits.CapsConfig{MaxPerSource: 2}, []op{
			admit("192.0.2.1", ""), admit("192.0.2.1", ""), admit("192.0.2.1", limits.ReasonMaxSessionsPerIP),
			admit("192.0.2.2", ""), release("192.0.2.1"), admit("192.0.2.1", ""),
		}},
		{"IPv4-mapped is the IPv4 source", limits.CapsConfig{MaxPerSource: 1}, []op{
			admit("192.0.2.1", ""), admit("::ffff:192.0.2.1", limits.ReasonMaxSessionsPerIP),
			release("::ffff:192.0.2.1"), admit("::ffff:192.0.2.1", ""), admit("192.0.2.1", limits.ReasonMaxSessionsPerIP),
		}},
		{"one IPv6 /64 is one source", limits.CapsConfig{MaxPerSource: 1}, []op{
			admit("2001:db8:1:2::1", ""), admit("2001:db8:1:2:ffff::9", limits.ReasonMaxSessionsPerIP),
			admit("2001:db8:1:3::1", ""),
		}},
		{"IPv6 prefix configurable", limits.CapsConfig{MaxPerSource: 1, IPv6Prefix: 128}, []op{
			admit("2001:db8:1:2::1", ""), admit("2001:db8:1:2::2", ""), admit("2001:db8:1:2::1", limits.ReasonMaxSessionsPerIP),
		}},
		{"new session rate per source", limits.CapsConfig{SourceRate: 1, SourceBurst: 2}, []op{
			admit("192.0.2.1", ""), admit("192.0.2.1", ""), admit("192.0.2.1", limits.ReasonNewSessionRate),
			admit("192.0.2.2", ""),
			{ip: "192.0.2.1", at: time.Second, want: ""}, {ip: "192.0.2.1", at: time.Second, want: limits.ReasonNewSessionRate},
		}},
		{"rate.Inf is no rate limit", limits.CapsConfig{SourceRate: rate.Inf}, []op{
			admit("192.0.2.1", ""), admit("192.0.2.1", ""), admit("192.0.2.1", ""),
		}},
		{"a refusal for a cap takes no rate token", limits.CapsConfig{MaxSessions: 1, SourceRate: 1, SourceBurst: 1}, []op{
			admit("192.0.2.2", ""), admit("192.0.2.1", limits.ReasonMaxSessions),
			release("192.0.2.2"), admit("192.0.2.1", ""),
		}},
		{"releasing what was never admitted changes nothing", limits.CapsConfig{MaxSessions: 1}, []op{
			release("192.0.2.9"), admit("192.0.2.1", ""), admit("192.0.2.2", limits.ReasonMaxSessions),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := limits.NewCaps(tt.cfg)
			for i, o := range tt.ops {
				if o.release {
					c.Release(ip(o.ip))
					continue
				}
				reason, ok := c.Admit(ip(o.ip), t0.Add(o.at))
				if reason != o.want || ok != (o.want == "") {
					t.Fatalf("op %d: Admit(%s) = %q, %v; want %q", i, o.ip, reason, ok, o.want)
				}
			}
		})
	}
}

func TestCapsSessions(t *testing.T) {
	c := limits.NewCaps(limits.CapsConfig{})
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	c.Admit(a, t0)
	c.Admit(a, t0)
	c.Admit(b, t0)
	if total, from := c.Sessions(a); total != 3 || from != 2 {
		t.Fatalf("Sessions = %d, %d; want 3, 2", total, from)
	}
	c.Release(a)
	c.Release(a)
	c.Release(a) // one too many: ignored
	if total, from := c.Sessions(a); total != 1 || from != 0 {
		t.Fatalf("Sessions = %d, %d after release; want 1, 0", total, from)
	}
}

// TestCapsTrackedSourcesBounded floods new sessions from many sources: the
// limiter table stays bounded, and a source that was refused for its rate
// is still refused while its limiter is kept.
func TestCapsTrackedSourcesBounded(t *testing.T) {
	const maxTracked = 64
	c := limits.NewCaps(limits.CapsConfig{SourceRate: 1, SourceBurst: 1, MaxTrackedSources: maxTracked})
	victim := netip.MustParseAddr("198.51.100.1")
	now := t0
	for i := range 10_000 {
		now = now.Add(time.Microsecond)
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if _, ok := c.Admit(src, now); !ok {
			t.Fatalf("first session from %v refused", src)
		}
		if n := c.TrackedSources(); n > maxTracked {
			t.Fatalf("%d limiters kept, bound %d", n, maxTracked)
		}
	}
	// A source's own limiter, once made, holds it to its rate.
	if _, ok := c.Admit(victim, now); !ok {
		t.Fatal("victim's first session refused")
	}
	if reason, ok := c.Admit(victim, now); ok || reason != limits.ReasonNewSessionRate {
		t.Fatalf("victim's second session: %q, %v; want refused for rate", reason, ok)
	}
	// One second later every limiter has refilled; a sweep empties the
	// table down to the new entry.
	later := now.Add(2 * time.Second)
	if _, ok := c.Admit(netip.MustParseAddr("198.51.100.2"), later); !ok {
		t.Fatal("refused after refill")
	}
	if n := c.TrackedSources(); n != 1 {
		t.Fatalf("%d limiters kept after a sweep of refilled ones, want 1", n)
	}
}

// TestCapsConcurrent admits from many goroutines at once, as many policy
// actors do: the cap holds exactly.
func TestCapsConcurrent(t *testing.T) {
	const maxSessions = 50
	c := limits.NewCaps(limits.CapsConfig{MaxSessions: maxSessions, SourceRate: 1000, SourceBurst: 1000})
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := 0
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				src := netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", (g*100+i)%250+1))
				if _, ok := c.Admit(src, time.Now()); ok {
					mu.Lock()
					admitted++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if admitted != maxSessions {
		t.Fatalf("admitted %d of 800 concurrent attempts, want exactly %d", admitted, maxSessions)
	}
}
