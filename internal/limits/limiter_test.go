package limits_test

import (
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/limits"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func TestLimiter(t *testing.T) {
	// A try is one datagram of size bytes at t0+at; ok is whether it passes.
	type try struct {
		at   time.Duration
		size int
		ok   bool
	}
	// n repeats a try.
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
	tests := []struct {
		name  string
		lim   limits.Limits
		tries []try
	}{
		{"zero limits let everything through", limits.Limits{}, n(10000, try{0, 1500, true})},
		{"datagram burst, then refused", limits.Limits{DatagramsPerSecond: 100, DatagramBurst: 3},
			cat(n(3, try{0, 1500, true}), n(2, try{0, 32, false}))},
		{"datagram refill at the rate", limits.Limits{DatagramsPerSecond: 100, DatagramBurst: 1},
			[]try{{0, 32, true}, {9 * time.Millisecond, 32, false}, {10 * time.Millisecond, 32, true},
				{15 * time.Millisecond, 32, false}, {20 * time.Millisecond, 32, true}}},
		{"refill stops at the burst", limits.Limits{DatagramsPerSecond: 100, DatagramBurst: 2},
			cat([]try{{0, 32, true}, {0, 32, true}}, n(2, try{time.Hour, 32, true}), []try{{time.Hour, 32, false}})},
		{"default datagram burst is one second", limits.Limits{DatagramsPerSecond: 50},
			cat(n(50, try{0, 32, true}), []try{{0, 32, false}})},
		{"fractional rate bursts at least one", limits.Limits{DatagramsPerSecond: 0.5},
			[]try{{0, 32, true}, {time.Second, 32, false}, {2 * time.Second, 32, true}}},
		{"byte rate", limits.Limits{BytesPerSecond: 100_000, ByteBurst: 100_000},
			cat(n(66, try{0, 1500, true}), []try{{0, 1500, false}, {0, 1000, true}, {0, 32, false},
				{10 * time.Millisecond, 1000, true}})},
		{"default byte burst is at least one largest datagram", limits.Limits{BytesPerSecond: 1000},
			[]try{{0, limits.MaxDatagram, true}, {0, 32, false}, {time.Second, 1000, true}, {time.Second, 1, false}}},
		{"a small explicit byte burst still passes the largest datagram", limits.Limits{BytesPerSecond: 1000, ByteBurst: 10},
			[]try{{0, limits.MaxDatagram, true}}},
		{"both: the datagram bucket binds", limits.Limits{DatagramsPerSecond: 10, DatagramBurst: 2, BytesPerSecond: 1e9},
			[]try{{0, 32, true}, {0, 32, true}, {0, 32, false}}},
		{"both: the byte bucket binds, and a refusal takes no datagram token",
			limits.Limits{DatagramsPerSecond: 10, DatagramBurst: 2, BytesPerSecond: 1, ByteBurst: limits.MaxDatagram},
			[]try{{0, limits.MaxDatagram, true}, {0, 32, false}, {0, 32, false}, {time.Hour, 32, true}, {time.Hour, 32, true}, {time.Hour, 32, false}}},
		{"unconfirmed budget", limits.Unconfirmed(),
			cat(n(40, try{0, 148, true}), []try{{0, 148, false}, {50 * time.Millisecond, 148, true}, {50 * time.Millisecond, 148, false}})},
		{"the clock going back refills nothing", limits.Limits{DatagramsPerSecond: 1, DatagramBurst: 1},
			[]try{{time.Minute, 32, true}, {0, 32, false}, {time.Minute, 32, false}, {time.Minute + time.Second, 32, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l limits.Limiter
			l.Set(tt.lim, t0)
			if l.Unlimited() != tt.lim.Unlimited() || l.Limits() != tt.lim {
				t.Fatalf("Limits() = %+v, Unlimited() = %v", l.Limits(), l.Unlimited())
			}
			for i, tr := range tt.tries {
				if got := l.Allow(t0.Add(tr.at), tr.size); got != tr.ok {
					t.Fatalf("try %d (%d bytes at %v): Allow = %v, want %v", i, tr.size, tr.at, got, tr.ok)
				}
			}
		})
	}
}

func TestLimiterZeroValue(t *testing.T) {
	var l limits.Limiter
	for i := range 1000 {
		if !l.Allow(t0, 1500) {
			t.Fatalf("zero Limiter refused datagram %d", i)
		}
	}
}

func TestLimiterSetRefills(t *testing.T) {
	var l limits.Limiter
	lim := limits.Limits{DatagramsPerSecond: 1, DatagramBurst: 1}
	l.Set(lim, t0)
	if !l.Allow(t0, 32) || l.Allow(t0, 32) {
		t.Fatal("burst of 1 not enforced")
	}
	l.Set(lim, t0)
	if !l.Allow(t0, 32) {
		t.Fatal("Set did not refill")
	}
	l.Set(limits.Limits{}, t0)
	for range 2 {
		if !l.Allow(t0, 32) {
			t.Fatal("Set to unlimited still limits")
		}
	}
}

// TestLimiterLongRun checks the long-run rate: over 10 s of a flood, the
// passed datagrams and bytes are the burst plus 10 s of the rate.
func TestLimiterLongRun(t *testing.T) {
	var l limits.Limiter
	l.Set(limits.Limits{DatagramsPerSecond: 1000, BytesPerSecond: 500_000, DatagramBurst: 100, ByteBurst: 100_000}, t0)
	passed, bytes := 0, 0
	for i := range 100_000 {
		now := t0.Add(time.Duration(i) * 100 * time.Microsecond) // 10 000 datagrams/s offered, for 10 s
		if l.Allow(now, 1000) {
			passed++
			bytes += 1000
		}
	}
	// Bytes bind: 100 000 + 10 s * 500 000 = 5.1 MB = 5 100 datagrams.
	if passed < 5090 || passed > 5101 {
		t.Fatalf("passed %d datagrams (%d bytes), want about 5100", passed, bytes)
	}
}

func TestLimiterAllocs(t *testing.T) {
	var l limits.Limiter
	l.Set(limits.Limits{DatagramsPerSecond: 1000, BytesPerSecond: 1e6}, t0)
	now := t0
	if n := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Microsecond)
		l.Allow(now, 1500)
	}); n != 0 {
		t.Fatalf("Allow allocates %v times, want 0", n)
	}
}

func BenchmarkLimiterAllow(b *testing.B) {
	var l limits.Limiter
	l.Set(limits.Limits{DatagramsPerSecond: 1e6, BytesPerSecond: 1e9}, t0)
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Microsecond)
		l.Allow(now, 1500)
	}
}

func TestDefaultMaxSessions(t *testing.T) {
	tests := []struct {
		name   string
		nofile uint64
		want   int
	}{
		{"unknown", 0, limits.MaxDefaultSessions},
		{"infinity", ^uint64(0), limits.MaxDefaultSessions},
		{"tiny", 50, 1},
		{"just the reserve", 150, 1},
		{"256", 256, 91},
		{"1024, a common soft limit", 1024, 763},
		{"4096", 4096, 3451},
		{"20000", 20000, limits.MaxDefaultSessions},
		{"16000", 16000, 13867}, // 16000 - 64 - 69 - 2000
		{"65536", 65536, limits.MaxDefaultSessions},
		{"1048576, a common hard limit", 1 << 20, limits.MaxDefaultSessions},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := limits.DefaultMaxSessions(tt.nofile)
			if got != tt.want {
				t.Fatalf("DefaultMaxSessions(%d) = %d, want %d", tt.nofile, got, tt.want)
			}
			reserved := uint64(limits.ReservedFiles + limits.AdminFiles)
			if tt.nofile > reserved && tt.nofile != ^uint64(0) && uint64(got)+reserved > tt.nofile {
				t.Fatalf("DefaultMaxSessions(%d) = %d leaves fewer than %d files for the relay and the admin listener", tt.nofile, got, reserved)
			}
		})
	}
}

func TestOpenFileLimit(t *testing.T) {
	n, err := limits.OpenFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	if n < 64 {
		t.Fatalf("open-file limit %d; is RLIMIT_NOFILE read?", n)
	}
}
