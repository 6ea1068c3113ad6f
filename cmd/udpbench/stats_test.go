package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// exactPercentile is the reference nearest-rank percentile of sorted.
func exactPercentile(sorted []int64, p float64) int64 {
	return sorted[nearestRank(p, uint64(len(sorted)))-1]
}

func TestNearestRank(t *testing.T) {
	tests := []struct {
		name string
		p    float64
		n    uint64
		want uint64
	}{
		{"median of 100", 50, 100, 50},
		{"p99 of 100", 99, 100, 99},
		{"p99.9 of 100 rounds up", 99.9, 100, 100},
		{"p99.9 of 10000", 99.9, 10000, 9990},
		{"p50 of 1", 50, 1, 1},
		{"p0 clamps to first", 0, 10, 1},
		{"p100 is the max", 100, 7, 7},
		{"median of odd count", 50, 5, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nearestRank(tt.p, tt.n); got != tt.want {
				t.Errorf("nearestRank(%v, %d) = %d, want %d", tt.p, tt.n, got, tt.want)
			}
		})
	}
}

func TestHistogramExactForSmallValues(t *testing.T) {
	var h histogram
	for v := int64(100); v >= 1; v-- { // 1..100, inserted out of order
		h.record(v)
	}
	tests := []struct {
		name string
		p    float64
		want int64
	}{
		{"p50", 50, 50},
		{"p90", 90, 90},
		{"p99", 99, 99},
		{"p99.9", 99.9, 100},
		{"p100", 100, 100},
		{"p1", 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := h.percentile(tt.p); got != tt.want {
				t.Errorf("percentile(%v) = %d, want %d", tt.p, got, tt.want)
			}
		})
	}
	if h.min != 1 || h.max != 100 || h.mean() != 50.5 || h.n != 100 {
		t.Errorf("min %d max %d mean %v n %d, want 1 100 50.5 100", h.min, h.max, h.mean(), h.n)
	}
}

func TestHistogramRelativeError(t *testing.T) {
	tests := []struct {
		name string
		gen  func(r *rand.Rand) int64
	}{
		{"uniform 10µs..10ms", func(r *rand.Rand) int64 { return 10_000 + r.Int64N(10_000_000) }},
		{"log-normal around 50µs", func(r *rand.Rand) int64 { return int64(50_000 * math.Exp(r.NormFloat64())) }},
		{"bimodal with a tail", func(r *rand.Rand) int64 {
			if r.IntN(1000) == 0 {
				return 5_000_000 + r.Int64N(1_000_000)
			}
			return 20_000 + r.Int64N(5_000)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			var h histogram
			vals := make([]int64, 200_000)
			for i := range vals {
				vals[i] = tt.gen(r)
				h.record(vals[i])
			}
			slices.Sort(vals)
			for _, p := range []float64{50, 90, 99, 99.9} {
				want, got := exactPercentile(vals, p), h.percentile(p)
				if rel := math.Abs(float64(got-want)) / float64(want); rel > 0.004 {
					t.Errorf("p%v = %d, exact %d: relative error %.4f > 0.4%%", p, got, want, rel)
				}
			}
		})
	}
}

func TestHistogramIndexMonotonic(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 255, 256, 257, 511, 512, 1000, 1 << 20, 1<<40 + 12345, 1<<62 + 1} {
		i := histIndex(v)
		if i < prev {
			t.Errorf("histIndex(%d) = %d, below the previous %d", v, i, prev)
		}
		if i >= histBuckets {
			t.Fatalf("histIndex(%d) = %d, beyond %d buckets", v, i, histBuckets)
		}
		if rep := histValue(i); math.Abs(float64(rep)-float64(v)) > float64(v)/256+1 {
			t.Errorf("histValue(histIndex(%d)) = %d: off by more than 1/256", v, rep)
		}
		prev = i
	}
}

func TestHistogramMergeAndEmpty(t *testing.T) {
	var a, b, empty histogram
	if empty.percentile(99) != 0 || empty.mean() != 0 {
		t.Fatal("empty histogram should report 0")
	}
	for v := int64(1); v <= 50; v++ {
		a.record(v)
	}
	for v := int64(51); v <= 100; v++ {
		b.record(v)
	}
	a.merge(&b)
	a.merge(&empty)
	if a.n != 100 || a.min != 1 || a.max != 100 || a.percentile(50) != 50 || a.percentile(99) != 99 {
		t.Errorf("merged: n %d min %d max %d p50 %d p99 %d", a.n, a.min, a.max, a.percentile(50), a.percentile(99))
	}
	s := a.summary()
	if s.P50Us != 0.05 || s.Samples != 100 {
		t.Errorf("summary %+v: want p50 0.05 µs and 100 samples", s)
	}
}

func TestSeqSet(t *testing.T) {
	var s seqSet
	for q := uint64(0); q < 1000; q++ {
		if q%10 != 3 {
			if !s.add(q) {
				t.Fatalf("add(%d) reported a duplicate", q)
			}
		}
	}
	if s.add(5) {
		t.Error("add(5) twice reported new")
	}
	tests := []struct {
		name     string
		from, to uint64
		want     uint64
	}{
		{"all", 0, 1000, 100},
		{"unaligned window", 7, 133, 12},
		{"empty window", 50, 50, 0},
		{"beyond what was added", 990, 1100, 1 + 110 - 10},
		{"one word", 64, 128, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want uint64
			for q := tt.from; q < tt.to; q++ {
				if !s.has(q) {
					want++
				}
			}
			if want != tt.want {
				t.Fatalf("test table wrong: brute force says %d, table %d", want, tt.want)
			}
			if got := s.missing(tt.from, tt.to); got != tt.want {
				t.Errorf("missing(%d, %d) = %d, want %d", tt.from, tt.to, got, tt.want)
			}
		})
	}
}
