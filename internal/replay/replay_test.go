package replay_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/replay"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

var (
	t0  = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	idA = wgproto.ClientID{0xa8, 0x1a, 0x15}
	idB = wgproto.ClientID{0x01, 0x02, 0x03}
)

// The same initiation has the same key under every client ID, and another
// initiation has another key.
func TestKeyIgnoresClientID(t *testing.T) {
	tab := replay.New(replay.Entries, replay.TTL, t0)
	a := wgtest.Initiation(idA, 1)
	b := append([]byte(nil), a...)
	copy(b[1:4], idB[:]) // the same initiation, replayed under idB
	if tab.Key(a) != tab.Key(b) {
		t.Fatal("one initiation under two client IDs has two keys")
	}
	if tab.Key(a) == tab.Key(wgtest.Initiation(idA, 2)) {
		t.Fatal("two initiations have one key")
	}
	c := wgtest.Initiation(idA, 1)
	c[0] = 0x11 // byte 0 counts
	if tab.Key(a) == tab.Key(c) {
		t.Fatal("byte 0 does not count in the key")
	}
	if replay.New(replay.Entries, replay.TTL, t0).Key(a) == tab.Key(a) {
		t.Fatal("two tables share a seed")
	}
}

func TestReplayed(t *testing.T) {
	// An op records (record true) or checks the initiation with sender
	// index init under client at t0+at; want is what it returns: for a
	// check, whether it is a replay; for a record, whether it may.
	type op struct {
		record bool
		init   uint32
		client wgproto.ClientID
		at     time.Duration
		want   bool
	}
	check := func(init uint32, c wgproto.ClientID, at time.Duration, want bool) op {
		return op{false, init, c, at, want}
	}
	record := func(init uint32, c wgproto.ClientID, at time.Duration, want bool) op {
		return op{true, init, c, at, want}
	}
	tests := []struct {
		name string
		ops  []op
	}{
		{"unknown is no replay", []op{check(1, idA, 0, false)}},
		{"same ID is a retransmission", []op{record(1, idA, 0, true), check(1, idA, time.Second, false), record(1, idA, time.Second, true)}},
		{"another ID is a replay", []op{record(1, idA, 0, true), check(1, idB, time.Second, true), record(1, idB, time.Second, false)}},
		{"another initiation is not", []op{record(1, idA, 0, true), check(2, idB, 0, false), record(2, idB, 0, true)}},
		{"remembered for TTL", []op{record(1, idA, 0, true), check(1, idB, replay.TTL-time.Second, true)}},
		{"forgotten after TTL", []op{record(1, idA, 0, true), check(1, idB, replay.TTL+time.Second, false), record(1, idB, replay.TTL+time.Second, true),
			check(1, idA, replay.TTL+2*time.Second, true)}},
		{"a retransmission refreshes", []op{record(1, idA, 0, true), record(1, idA, replay.TTL/2, true), check(1, idB, replay.TTL+time.Second, true)}},
		{"a clock going back forgets nothing", []op{record(1, idA, time.Minute, true), check(1, idB, 0, true)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := replay.New(replay.Entries, replay.TTL, t0)
			for i, o := range tt.ops {
				k := tab.Key(wgtest.Initiation(idA, o.init)) // the same bytes whatever the ID asking
				var got bool
				if o.record {
					got = tab.Record(k, o.client, t0.Add(o.at))
				} else {
					got = tab.Replayed(k, o.client, t0.Add(o.at))
				}
				if got != o.want {
					t.Fatalf("op %d (%+v): got %v", i, o, got)
				}
			}
		})
	}
}

// A table never holds more than its capacity: past it, the oldest entries
// go, and the newest are still remembered.
func TestBounded(t *testing.T) {
	tab := replay.New(64, replay.TTL, t0)
	if tab.Capacity() != 64 {
		t.Fatalf("capacity %d, want 64", tab.Capacity())
	}
	keys := make([]uint64, 10_000)
	for i := range keys {
		keys[i] = tab.Key(wgtest.Initiation(idA, uint32(i)))
		tab.Record(keys[i], idA, t0.Add(time.Duration(i)*time.Second/100))
	}
	now := t0.Add(100 * time.Second)
	remembered, newest := 0, 0
	for i, k := range keys {
		if tab.Replayed(k, idB, now) {
			remembered++
			if i >= len(keys)-16 {
				newest++
			}
		}
	}
	if remembered > tab.Capacity() {
		t.Fatalf("%d initiations remembered in a table of %d", remembered, tab.Capacity())
	}
	if remembered < tab.Capacity()/2 || newest < 8 {
		t.Fatalf("%d remembered, %d of the newest 16: the table forgets what it should keep", remembered, newest)
	}
}

// Supervisors sharing a table race to record one initiation under their
// own client IDs: exactly one wins.
func TestRecordRace(t *testing.T) {
	tab := replay.New(replay.Entries, replay.TTL, t0)
	k := tab.Key(wgtest.Initiation(idA, 7))
	for round := range 100 {
		k := k + uint64(round)
		var won atomic.Int32
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				if tab.Record(k, wgproto.ClientID{1, byte(round), byte(g)}, t0) {
					won.Add(1)
				}
			})
		}
		wg.Wait()
		if won.Load() != 1 {
			t.Fatalf("round %d: %d of 8 supervisors recorded one initiation", round, won.Load())
		}
	}
}

func TestAllocs(t *testing.T) {
	tab := replay.New(replay.Entries, replay.TTL, t0)
	b := wgtest.Initiation(idA, 1)
	now := t0
	if n := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Millisecond)
		k := tab.Key(b)
		if !tab.Replayed(k, idA, now) {
			tab.Record(k, idA, now)
		}
		b[4]++
	}); n != 0 {
		t.Fatalf("checking and recording an initiation allocates %v times, want 0", n)
	}
}

func BenchmarkCheckAndRecord(b *testing.B) {
	tab := replay.New(replay.Entries, replay.TTL, t0)
	init := wgtest.Initiation(idA, 1)
	b.ReportAllocs()
	for b.Loop() {
		k := tab.Key(init)
		if !tab.Replayed(k, idB, t0) {
			tab.Record(k, idA, t0)
		}
	}
}
