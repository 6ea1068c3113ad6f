// Package pool keeps the health of a relay's upstream endpoints and picks
// the endpoint a session uses, from what the relay sees anyway: the
// handshakes its sessions forward. Each answered handshake initiation gives
// its endpoint a round-trip sample and proves it alive; each initiation the
// client had to retry unanswered counts against it. No probe is ever sent.
//
// # The rules
//
//   - New sessions go to the endpoint that is up with the lowest smoothed
//     handshake round trip; endpoints without a sample yet come after those
//     with one, in the order configured.
//   - An endpoint with FailAfter unanswered initiations in a row, across
//     all its sessions, is marked down: new sessions skip it. Any answer
//     resets the count and brings it back up.
//   - A down endpoint is tried again after a backoff (Backoff, doubled at
//     each failed try, up to MaxBackoff): the next session that would
//     prefer it goes there, alone, until that session's handshake is
//     answered (up) or not (down for the doubled backoff).
//   - A session moves (Next) only away from an endpoint that is down, to
//     an endpoint that is up or due for a try; sessions on healthy
//     endpoints never move, and nothing moves back when an endpoint
//     recovers.
//   - With every endpoint down, new sessions still get one (the one to be
//     tried soonest): the relay never refuses a client for want of health
//     data.
//
// A Pool does no I/O and reads no clock: every call takes the time, so
// tests drive it with an injected clock. It is not safe for concurrent use;
// the session supervisor owns it, and publishes Status for the metrics.
package pool

import (
	"time"
)

// Defaults, with the reason for each.
const (
	// DefaultBackoff is how long a down endpoint is skipped before it is
	// tried again: six of WireGuard's 5 s retries, so a dead endpoint
	// costs a new client at most one failover every 30 s.
	DefaultBackoff = 30 * time.Second
	// DefaultMaxBackoff caps the backoff, doubled at each failed try: an
	// endpoint that comes back is in use again within 10 minutes.
	DefaultMaxBackoff = 10 * time.Minute
	// rttWeight smooths round-trip samples as TCP does its SRTT: each new
	// sample moves the estimate by an eighth of the difference, so one
	// slow handshake does not send every new session elsewhere.
	rttWeight = 8
)

// Config sets a Pool's thresholds.
type Config struct {
	// FailAfter is how many unanswered initiations in a row, across the
	// endpoint's sessions, mark it down; at least 1.
	FailAfter int
	// Backoff and MaxBackoff bound how long a down endpoint is skipped;
	// zero takes DefaultBackoff and DefaultMaxBackoff.
	Backoff, MaxBackoff time.Duration
}

// Pool is the health of a relay's endpoints, by index in the order they
// were configured. Its zero value has no endpoints; use New.
type Pool struct {
	cfg Config
	eps []endpoint
}

// endpoint is one endpoint's record.
type endpoint struct {
	name       string
	rtt        time.Duration // smoothed handshake round trip; 0: no sample yet
	answered   uint64        // initiations answered
	unanswered uint64        // initiations retried unanswered
	inARow     int           // unanswered since the last answer
	down       bool
	downSince  time.Time
	retryAt    time.Time     // when a down endpoint may be tried again
	backoff    time.Duration // the current backoff, while down
	probing    bool          // a session was sent to try it again
	sessions   int
	failovers  uint64 // sessions moved away from it
}

// New returns a pool of the endpoints named names (their configured
// "host:port"), all up and without samples.
func New(cfg Config, names ...string) *Pool {
	p := &Pool{}
	p.SetConfig(cfg)
	p.SetNames(names...)
	return p
}

// SetConfig changes the thresholds (a reload); records are kept.
func (p *Pool) SetConfig(cfg Config) {
	if cfg.FailAfter < 1 {
		cfg.FailAfter = 1
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.MaxBackoff < cfg.Backoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.Backoff)
	}
	p.cfg = cfg
}

// SetNames replaces the endpoints (a reload): an endpoint whose name stays
// keeps its record, at its new index; a new one starts up, without samples.
func (p *Pool) SetNames(names ...string) {
	eps := make([]endpoint, len(names))
	for i, n := range names {
		eps[i] = endpoint{name: n}
		if j := p.Index(n); j >= 0 {
			eps[i] = p.eps[j]
		}
	}
	p.eps = eps
}

// Len is the number of endpoints.
func (p *Pool) Len() int { return len(p.eps) }

// Name is endpoint i's name.
func (p *Pool) Name(i int) string { return p.eps[i].name }

// Index returns the index of the endpoint named name, or -1.
func (p *Pool) Index(name string) int {
	for i := range p.eps {
		if p.eps[i].name == name {
			return i
		}
	}
	return -1
}

// Down reports whether endpoint i is marked down.
func (p *Pool) Down(i int) bool { return p.eps[i].down }

// Answered records that endpoint i answered a handshake initiation, rtt
// after it was forwarded (0 when there is no sample, as for a cookie
// reply, which proves the endpoint alive but busy). It reports whether the
// endpoint came back up.
func (p *Pool) Answered(i int, rtt time.Duration, now time.Time) (up bool) {
	e := &p.eps[i]
	e.answered++
	e.inARow = 0
	if rtt > 0 {
		if e.rtt == 0 {
			e.rtt = rtt
		} else {
			e.rtt += (rtt - e.rtt) / rttWeight
		}
	}
	if !e.down {
		return false
	}
	e.down, e.probing, e.backoff = false, false, 0
	return true
}

// Unanswered records that an initiation forwarded to endpoint i was
// retried by its client without an answer. It reports whether this marked
// the endpoint down. A try of a down endpoint that fails doubles its
// backoff.
func (p *Pool) Unanswered(i int, now time.Time) (down bool) {
	e := &p.eps[i]
	e.unanswered++
	e.inARow++
	switch {
	case !e.down && e.inARow >= p.cfg.FailAfter:
		e.down, e.downSince, e.probing = true, now, false
		e.backoff = p.cfg.Backoff
		e.retryAt = now.Add(e.backoff)
		return true
	case e.down && e.probing:
		e.probing = false
		e.backoff = min(2*e.backoff, p.cfg.MaxBackoff)
		e.retryAt = now.Add(e.backoff)
	}
	return false
}

// DownFor is how long endpoint i has been down at now; 0 while it is up.
func (p *Pool) DownFor(i int, now time.Time) time.Duration {
	if e := &p.eps[i]; e.down {
		return now.Sub(e.downSince)
	}
	return 0
}

// RetryIn is how long a down endpoint i is still skipped at now.
func (p *Pool) RetryIn(i int, now time.Time) time.Duration {
	if e := &p.eps[i]; e.down && e.retryAt.After(now) {
		return e.retryAt.Sub(now)
	}
	return 0
}

// Pick returns the endpoint a new session should use at now, among those
// usable (usable(i) false: no address yet): the best that is up or due for
// a try (see the package doc), else, every one being down, the one to be
// tried soonest. ok is false when none is usable. Picking a down endpoint
// that is due makes it the one session's try: others skip it meanwhile.
func (p *Pool) Pick(now time.Time, usable func(i int) bool) (i int, ok bool) {
	if i, ok = p.best(now, -1, usable); ok {
		p.trying(i, now)
		return i, true
	}
	for j := range p.eps {
		if usable(j) && (!ok || p.eps[j].retryAt.Before(p.eps[i].retryAt)) {
			i, ok = j, true
		}
	}
	return i, ok
}

// Next returns the endpoint a session leaving endpoint from should move to
// at now: the best other endpoint that is usable and up or due for a try.
// ok is false when there is none; the session then stays.
func (p *Pool) Next(now time.Time, from int, usable func(i int) bool) (i int, ok bool) {
	if i, ok = p.best(now, from, usable); ok {
		p.trying(i, now)
	}
	return i, ok
}

// best ranks the endpoints other than skip that are usable and up or due
// for a try: those with a round-trip sample by it, lowest first, then
// those without one in configured order, counted from after skip.
func (p *Pool) best(now time.Time, skip int, usable func(i int) bool) (best int, ok bool) {
	n := len(p.eps)
	for k := range n {
		i := (skip + 1 + k) % n
		if skip < 0 {
			i = k
		}
		e := &p.eps[i]
		if i == skip || !usable(i) || (e.down && now.Before(e.retryAt)) {
			continue
		}
		if !ok || better(e, &p.eps[best]) {
			best, ok = i, true
		}
	}
	return best, ok
}

// better reports whether a ranks before b, which comes earlier in the
// order of the scan: a round-trip sample before none, then the lower one.
func better(a, b *endpoint) bool {
	switch {
	case a.rtt == 0:
		return false
	case b.rtt == 0:
		return true
	}
	return a.rtt < b.rtt
}

// trying marks a down endpoint that was picked as being tried by one
// session: others skip it for another backoff, unless an answer brings it
// up first.
func (p *Pool) trying(i int, now time.Time) {
	if e := &p.eps[i]; e.down {
		e.probing = true
		e.retryAt = now.Add(e.backoff)
	}
}

// AddSessions changes endpoint i's count of sessions by delta.
func (p *Pool) AddSessions(i, delta int) { p.eps[i].sessions += delta }

// Moved counts a session that moved away from endpoint i.
func (p *Pool) Moved(i int) { p.eps[i].failovers++ }

// Status is one endpoint's health, for metrics and logs.
type Status struct {
	// Name is the endpoint as configured, "host:port".
	Name string
	// Up is false while the endpoint is marked down.
	Up bool
	// RTT is the smoothed handshake round trip; 0 before the first sample.
	RTT time.Duration
	// Sessions are the sessions that use it now.
	Sessions int
	// Answered and Unanswered count its handshake initiations answered
	// and retried unanswered; Failovers the sessions that moved away.
	Answered, Unanswered, Failovers uint64
}

// Status returns every endpoint's health, in configured order.
func (p *Pool) Status() []Status {
	out := make([]Status, len(p.eps))
	for i := range p.eps {
		e := &p.eps[i]
		out[i] = Status{Name: e.name, Up: !e.down, RTT: e.rtt, Sessions: e.sessions,
			Answered: e.answered, Unanswered: e.unanswered, Failovers: e.failovers}
	}
	return out
}
