package session

import (
	"net/netip"
	"time"

	"github.com/udpfwd/udpfwd/internal/limits"
)

// unconfirmedSources is how many client addresses other than the confirmed
// one get a budget of their own at a time. A genuine roaming client needs
// one; the table is bounded so that addresses sprayed by an attacker cost no
// memory. Evicting an address only gives it a fresh (full) budget later.
const unconfirmedSources = 16

// unconfirmedRefill is how long an unused budget takes to be full again
// (limits.Unconfirmed: a burst of 40 at 20 a second, 2 s). A budget unused
// for this long is worth no more than a new one, so the table can go.
var unconfirmedRefill = func() time.Duration {
	l := limits.Unconfirmed()
	return time.Duration(float64(l.DatagramBurst) / l.DatagramsPerSecond * float64(time.Second))
}()

// unconfirmedBudgets gives every unconfirmed source IP its own small budget
// (limits.Unconfirmed), so that an attacker who knows a client ID cannot
// spend the budget the client needs to hand-shake from a new network. A
// fixed table: no allocation per datagram or per new address. Most sessions
// never hear from an unconfirmed address, so a session allocates the table
// on the first such datagram and lets it go once every budget in it is full
// again (trim).
type unconfirmedBudgets struct {
	entries [unconfirmedSources]struct {
		ip       netip.Addr
		lim      limits.Limiter
		lastUsed int64 // Unix nanoseconds
	}
}

// allowUnconfirmed charges size bytes to ip's budget, making the table if
// the session has none.
func (s *Session) allowUnconfirmed(now time.Time, ip netip.Addr, size int) bool {
	if s.unconfirmed == nil {
		s.unconfirmed = new(unconfirmedBudgets)
	}
	return s.unconfirmed.allow(now, ip, size)
}

// allow charges size bytes to ip's budget.
func (u *unconfirmedBudgets) allow(now time.Time, ip netip.Addr, size int) bool {
	at := now.UnixNano()
	oldest := 0
	for i := range u.entries {
		e := &u.entries[i]
		if e.ip == ip {
			e.lastUsed = at
			return e.lim.Allow(now, size)
		}
		if e.lastUsed < u.entries[oldest].lastUsed {
			oldest = i
		}
	}
	e := &u.entries[oldest]
	e.ip, e.lastUsed = ip, at
	e.lim.Set(limits.Unconfirmed(), now)
	return e.lim.Allow(now, size)
}

// idleSince reports whether no budget was used after before.
func (u *unconfirmedBudgets) idleSince(before time.Time) bool {
	limit := before.UnixNano()
	for i := range u.entries {
		if u.entries[i].lastUsed > limit {
			return false
		}
	}
	return true
}

// trimUnconfirmed lets the table of budgets go once every budget in it
// would be full again at now.
func (s *Session) trimUnconfirmed(now time.Time) {
	if s.unconfirmed != nil && s.unconfirmed.idleSince(now.Add(-unconfirmedRefill)) {
		s.unconfirmed = nil
	}
}
