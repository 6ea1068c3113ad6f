package limits_test

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/limits"
)

func TestAdmission(t *testing.T) {
	// A try asks from ip at t0+at; ok is whether it is allowed.
	type try struct {
		ip string
		at time.Duration
		ok bool
	}
	n := func(k int, tr try) []try {
		s := make([]try, k)
		for i := range s {
			s[i] = tr
		}
		return s
	}
	cat := func(parts ...[]try) []try {
		var s []try
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	small := limits.AdmissionConfig{SourceRate: 10, SourceBurst: 2, Rate: 100, Burst: 5}
	tests := []struct {
		name  string
		cfg   limits.AdmissionConfig
		tries []try
	}{
		{"defaults: a source's burst, then refused", limits.AdmissionConfig{},
			cat(n(limits.SourceAdmissionBurst, try{"192.0.2.1", 0, true}), []try{{"192.0.2.1", 0, false}, {"192.0.2.2", 0, true}})},
		{"a source refills at its rate", small,
			[]try{{"192.0.2.1", 0, true}, {"192.0.2.1", 0, true}, {"192.0.2.1", 0, false},
				{"192.0.2.1", 99 * time.Millisecond, false}, {"192.0.2.1", 100 * time.Millisecond, true}, {"192.0.2.1", 100 * time.Millisecond, false}}},
		{"the relay-wide burst binds across sources", small,
			[]try{{"192.0.2.1", 0, true}, {"192.0.2.2", 0, true}, {"192.0.2.3", 0, true}, {"192.0.2.4", 0, true}, {"192.0.2.5", 0, true},
				{"192.0.2.6", 0, false}, {"192.0.2.6", 10 * time.Millisecond, true}, {"192.0.2.7", 10 * time.Millisecond, false}}},
		{"a refusal for the relay-wide budget takes nothing from the source", small,
			cat([]try{{"192.0.2.1", 0, true}, {"192.0.2.2", 0, true}, {"192.0.2.3", 0, true}, {"192.0.2.4", 0, true}, {"192.0.2.5", 0, true}},
				n(3, try{"192.0.2.9", 0, false}),
				[]try{{"192.0.2.9", 20 * time.Millisecond, true}, {"192.0.2.9", 20 * time.Millisecond, true}})},
		{"a refusal for the source takes nothing relay-wide", small,
			cat([]try{{"192.0.2.1", 0, true}, {"192.0.2.1", 0, true}}, n(10, try{"192.0.2.1", 0, false}),
				[]try{{"192.0.2.2", 0, true}, {"192.0.2.2", 0, true}, {"192.0.2.3", 0, true}, {"192.0.2.3", 0, false}})},
		{"one IPv6 /64 is one source", small,
			[]try{{"2001:db8:1:2::1", 0, true}, {"2001:db8:1:2:ffff::9", 0, true}, {"2001:db8:1:2::7", 0, false}, {"2001:db8:1:3::1", 0, true}}},
		{"IPv4-mapped is the IPv4 source", small,
			[]try{{"192.0.2.1", 0, true}, {"::ffff:192.0.2.1", 0, true}, {"192.0.2.1", 0, false}}},
		{"the clock going back refills nothing", small,
			[]try{{"192.0.2.1", time.Second, true}, {"192.0.2.1", time.Second, true}, {"192.0.2.1", 0, false}, {"192.0.2.1", time.Second, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := limits.NewAdmission(tt.cfg, t0)
			for i, tr := range tt.tries {
				if got := a.Allow(netip.MustParseAddr(tr.ip), t0.Add(tr.at)); got != tr.ok {
					t.Fatalf("try %d (%s at %v): Allow = %v, want %v", i, tr.ip, tr.at, got, tr.ok)
				}
			}
		})
	}
}

// Sources sprayed from everywhere (forged addresses) never grow the table:
// they push each other's buckets out, which gives a pushed-out source a
// fresh burst, but all of them together get no more than the relay-wide
// budget.
func TestAdmissionSpray(t *testing.T) {
	const burst = 1000
	a := limits.NewAdmission(limits.AdmissionConfig{SourceRate: 1, SourceBurst: 1, Rate: 1e-9, Burst: burst, Sources: 64}, t0)
	if a.Sources() != 64 {
		t.Fatalf("%d sources tracked, want 64", a.Sources())
	}
	now, allowed := t0, 0
	for i := range 100_000 {
		now = now.Add(time.Microsecond)
		if a.Allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now) {
			allowed++
		}
	}
	if allowed != burst {
		t.Fatalf("100 000 sources were allowed %d sessions, want the relay-wide burst, %d", allowed, burst)
	}
}

// Many supervisors asking at once get exactly the relay-wide burst.
func TestAdmissionConcurrent(t *testing.T) {
	const burst = 500
	a := limits.NewAdmission(limits.AdmissionConfig{Rate: 1e-9, Burst: burst}, t0)
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				src := netip.AddrFrom4([4]byte{10, byte(g), byte(i >> 8), byte(i)})
				if a.Allow(src, t0) {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if allowed.Load() != burst {
		t.Fatalf("allowed %d of 8 000 concurrent asks, want the burst, %d", allowed.Load(), burst)
	}
}

func TestAdmissionAllocs(t *testing.T) {
	a := limits.NewAdmission(limits.AdmissionConfig{}, t0)
	now, i := t0, 0
	if n := testing.AllocsPerRun(1000, func() {
		i++
		now = now.Add(time.Microsecond)
		a.Allow(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), now)
		a.Allow(netip.MustParseAddr("2001:db8::1"), now)
	}); n != 0 {
		t.Fatalf("Allow allocates %v times, want 0", n)
	}
}

func BenchmarkAdmissionAllow(b *testing.B) {
	a := limits.NewAdmission(limits.AdmissionConfig{}, t0)
	src := netip.MustParseAddr("192.0.2.1")
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Microsecond)
		a.Allow(src, now)
	}
}

// A reload changes the rates in place: a source keeps what it has spent,
// and the new burst caps what it may still take at once.
func TestAdmissionReconfigure(t *testing.T) {
	a := limits.NewAdmission(limits.AdmissionConfig{SourceRate: 1, SourceBurst: 10}, t0)
	src := netip.MustParseAddr("192.0.2.1")
	for range 4 {
		if !a.Allow(src, t0) {
			t.Fatal("refused within the burst")
		}
	}
	a.Reconfigure(limits.AdmissionConfig{SourceRate: 100, SourceBurst: 3})
	for i := range 3 {
		if !a.Allow(src, t0) {
			t.Fatalf("ask %d refused: the new burst is 3", i)
		}
	}
	if a.Allow(src, t0) {
		t.Fatal("allowed past the new burst")
	}
	if !a.Allow(src, t0.Add(10*time.Millisecond)) {
		t.Fatal("the new rate does not refill")
	}
	if a.Sources() != limits.AdmissionSources {
		t.Fatalf("%d sources tracked after a reload, want %d", a.Sources(), limits.AdmissionSources)
	}
}
