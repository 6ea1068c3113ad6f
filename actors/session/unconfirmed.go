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

// unconfirmedBudgets gives every unconfirmed source IP its own small budget
// (limits.Unconfirmed), so that an attacker who knows a client ID cannot
// spend the budget the client needs to hand-shake from a new network. A
// fixed table: no allocation per datagram or per new address.
type unconfirmedBudgets struct {
	entries [unconfirmedSources]struct {
		ip       netip.Addr
		lim      limits.Limiter
		lastUsed time.Time
	}
}

// allow charges size bytes to ip's budget.
func (u *unconfirmedBudgets) allow(now time.Time, ip netip.Addr, size int) bool {
	oldest := 0
	for i := range u.entries {
		e := &u.entries[i]
		if e.ip == ip {
			e.lastUsed = now
			return e.lim.Allow(now, size)
		}
		if e.lastUsed.Before(u.entries[oldest].lastUsed) {
			oldest = i
		}
	}
	e := &u.entries[oldest]
	e.ip, e.lastUsed = ip, now
	e.lim.Set(limits.Unconfirmed(), now)
	return e.lim.Allow(now, size)
}
