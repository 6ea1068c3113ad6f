package main

import (
	"math"
	"math/bits"
)

// histogram records non-negative durations (ns) with a bounded relative
// error, so latency percentiles of millions of datagrams take fixed memory:
// values below 256 are exact; above, each power-of-two range is split into
// 128 buckets (bucket width <= 1/128 of its values; the reported midpoint
// is within 0.4 %). Exact min, max and sum are kept alongside.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	sum    float64
	min    int64
	max    int64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits // buckets per power of two
	histExact   = 2 * histSub      // values below this are exact
	histBuckets = histExact + (64-histSubBits-1)*histSub
)

// histIndex maps v >= 0 to its bucket.
func histIndex(v uint64) int {
	if v < histExact {
		return int(v)
	}
	e := bits.Len64(v) - histSubBits - 1 // v>>e is in [128, 256)
	return histExact + (e-1)*histSub + int(v>>e) - histSub
}

// histValue is the value reported for bucket i: the midpoint of its range.
func histValue(i int) int64 {
	if i < histExact {
		return int64(i)
	}
	e := (i-histExact)/histSub + 1
	m := uint64((i-histExact)%histSub + histSub)
	lo := m << e
	return int64(lo + (uint64(1)<<e-1)/2)
}

// record adds one sample; negative samples are clamped to 0.
func (h *histogram) record(v int64) {
	if v < 0 {
		v = 0
	}
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
	h.counts[histIndex(uint64(v))]++
}

// merge adds all samples of o to h.
func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
	for i, c := range o.counts {
		h.counts[i] += c
	}
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100): the
// smallest recorded value v such that at least p % of the samples are <= v,
// to the histogram's resolution and clamped to the exact min and max. It
// returns 0 for an empty histogram.
func (h *histogram) percentile(p float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := nearestRank(p, h.n)
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			return min(max(histValue(i), h.min), h.max)
		}
	}
	return h.max
}

// mean returns the exact mean, or 0 for an empty histogram.
func (h *histogram) mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// nearestRank is the 1-based rank of the p-th percentile among n samples:
// ceil(p/100 * n), at least 1 and at most n. The product is nudged down by
// a part in 10^9 so binary rounding (99.9/100*10000 = 9990.000000000002)
// does not push an exact rank up by one.
func nearestRank(p float64, n uint64) uint64 {
	x := p / 100 * float64(n)
	r := uint64(math.Ceil(x - x*1e-9))
	return min(max(r, 1), n)
}

// latencySummary is the JSON and table form of a latency histogram, in µs.
type latencySummary struct {
	Samples uint64  `json:"samples"`
	MinUs   float64 `json:"min_us"`
	MeanUs  float64 `json:"mean_us"`
	P50Us   float64 `json:"p50_us"`
	P90Us   float64 `json:"p90_us"`
	P99Us   float64 `json:"p99_us"`
	P999Us  float64 `json:"p999_us"`
	MaxUs   float64 `json:"max_us"`
}

// summary converts h (ns) to µs percentiles.
func (h *histogram) summary() latencySummary {
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	return latencySummary{
		Samples: h.n,
		MinUs:   us(h.min),
		MeanUs:  h.mean() / 1e3,
		P50Us:   us(h.percentile(50)),
		P90Us:   us(h.percentile(90)),
		P99Us:   us(h.percentile(99)),
		P999Us:  us(h.percentile(99.9)),
		MaxUs:   us(h.max),
	}
}

// seqSet records which sequence numbers were answered, for exact loss
// accounting: a bit per sequence number, grown as numbers are used.
type seqSet struct {
	words []uint64
}

// add marks seq and reports whether it was new.
func (s *seqSet) add(seq uint64) bool {
	w := int(seq >> 6)
	for w >= len(s.words) {
		s.words = append(s.words, 0)
	}
	bit := uint64(1) << (seq & 63)
	if s.words[w]&bit != 0 {
		return false
	}
	s.words[w] |= bit
	return true
}

// has reports whether seq was marked.
func (s *seqSet) has(seq uint64) bool {
	w := int(seq >> 6)
	return w < len(s.words) && s.words[w]&(uint64(1)<<(seq&63)) != 0
}

// missing counts the unmarked sequence numbers in [from, to).
func (s *seqSet) missing(from, to uint64) uint64 {
	var n uint64
	for q := from; q < to; {
		if q&63 == 0 && to-q >= 64 {
			w := int(q >> 6)
			if w < len(s.words) {
				n += uint64(64 - bits.OnesCount64(s.words[w]))
			} else {
				n += 64
			}
			q += 64
			continue
		}
		if !s.has(q) {
			n++
		}
		q++
	}
	return n
}
