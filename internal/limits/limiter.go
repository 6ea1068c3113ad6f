// Package limits holds the relay's limits that are plain arithmetic: the
// per-client token bucket a session enforces on its datagrams, the shared
// session caps the admission policy consults, the admission budget the
// supervisor checks before anything is spent on a new session, and the
// default session cap derived from the open-file limit.
//
// It is a package of its own, not part of internal/stats, because stats
// only counts what happened while these decide what may happen; keeping them
// apart keeps stats free of policy. Nothing here does I/O or imports an
// actor package.
package limits

import (
	"math"
	"time"
)

// MaxDatagram is the largest UDP payload. A byte bucket smaller than this
// could never pass a datagram of that size, so byte bursts are at least
// this large.
const MaxDatagram = 65535

// Limits is a per-client rate limit, applied by a session to each direction
// of its traffic separately. A zero rate means unlimited. A burst of zero or
// less means one second's worth of the rate (at least one datagram, at least
// MaxDatagram bytes): WireGuard carries TCP, whose bursts a tighter bucket
// would turn into losses.
type Limits struct {
	DatagramsPerSecond float64
	BytesPerSecond     float64
	DatagramBurst      int
	ByteBurst          int
}

// Unlimited reports whether l limits nothing.
func (l Limits) Unlimited() bool { return l.DatagramsPerSecond <= 0 && l.BytesPerSecond <= 0 }

// bursts returns the bucket sizes l implies.
func (l Limits) bursts() (datagrams, bytes float64) {
	datagrams = float64(l.DatagramBurst)
	if datagrams <= 0 {
		datagrams = math.Ceil(l.DatagramsPerSecond)
	}
	bytes = float64(l.ByteBurst)
	if bytes <= 0 {
		bytes = math.Ceil(l.BytesPerSecond)
	}
	return max(datagrams, 1), max(bytes, MaxDatagram)
}

// Unconfirmed returns the budget a session gives datagrams from client
// addresses other than its confirmed one, all such addresses together and
// apart from the client's own limit. Anyone can send datagrams with a
// victim's client ID; without this budget a flood of them would be
// forwarded to the upstream from the victim's port and spend the victim's
// own rate limit. A genuine client needs few datagrams from a new address
// before it is confirmed (one transport message with a live index moves it
// at once; otherwise one handshake initiation every 5 s), so 20 per second
// with bursts of 40 leaves a wide margin.
func Unconfirmed() Limits { return Limits{DatagramsPerSecond: 20, DatagramBurst: 40} }

// slack absorbs the rounding of refills added up in floating point, so a
// datagram due exactly now is not refused for a token short by 1e-16.
const slack = 1e-6

// Limiter enforces Limits as two token buckets, one counting datagrams and
// one counting bytes; a datagram passes only if both have room. Its zero
// value lets everything through.
//
// A Limiter is owned by one session actor: it takes no lock and never
// allocates. Read the clock once per batch and pass it to every call.
type Limiter struct {
	lim              Limits
	datagramBurst    float64
	byteBurst        float64
	datagrams, bytes float64 // tokens now
	last             time.Time
}

// Set replaces the limits and fills both buckets, so new limits start with
// a full burst.
func (l *Limiter) Set(lim Limits, now time.Time) {
	l.lim = lim
	l.datagramBurst, l.byteBurst = lim.bursts()
	l.datagrams, l.bytes = l.datagramBurst, l.byteBurst
	l.last = now
}

// Limits returns the limits in force.
func (l *Limiter) Limits() Limits { return l.lim }

// Unlimited reports whether the limiter lets everything through, so a
// session can skip calling Allow.
func (l *Limiter) Unlimited() bool { return l.lim.Unlimited() }

// Allow reports whether a datagram of size bytes may pass at now, and if
// so takes its tokens. A refused datagram takes nothing.
func (l *Limiter) Allow(now time.Time, size int) bool {
	if l.lim.Unlimited() {
		return true
	}
	if dt := now.Sub(l.last); dt > 0 {
		s := dt.Seconds()
		l.datagrams = min(l.datagramBurst, l.datagrams+s*l.lim.DatagramsPerSecond)
		l.bytes = min(l.byteBurst, l.bytes+s*l.lim.BytesPerSecond)
		l.last = now
	}
	needD, needB := l.lim.DatagramsPerSecond > 0, l.lim.BytesPerSecond > 0
	if (needD && l.datagrams < 1-slack) || (needB && l.bytes < float64(size)-slack) {
		return false
	}
	if needD {
		l.datagrams--
	}
	if needB {
		l.bytes -= float64(size)
	}
	return true
}
