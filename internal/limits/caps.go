package limits

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Refusal reasons of Caps.Admit. They are stable: they become log fields
// and metric label values.
const (
	ReasonMaxSessions      = "max_sessions"
	ReasonMaxSessionsPerIP = "max_sessions_per_ip"
	ReasonNewSessionRate   = "new_session_rate"
)

// CapsConfig configures Caps. Zero values mean unlimited.
type CapsConfig struct {
	// MaxSessions caps the sessions admitted and not yet released.
	MaxSessions int
	// MaxPerSource caps them per source (see IPv6Prefix).
	MaxPerSource int
	// SourceRate limits new sessions per source, with SourceBurst as the
	// bucket size (at least 1). Zero or rate.Inf means no limit.
	SourceRate  rate.Limit
	SourceBurst int
	// IPv6Prefix is how many leading bits of an IPv6 address name one
	// source: 64 by default, because one host commonly holds a whole /64
	// and could otherwise pick a fresh address per attempt. IPv4 addresses
	// (and IPv4-mapped IPv6 ones) are one source each.
	IPv6Prefix int
	// MaxTrackedSources bounds the per-source rate limiters kept (default
	// 4096). Past it, limiters that have refilled are dropped (they equal
	// a new one); if none has, an arbitrary one is.
	MaxTrackedSources int
}

// CapsLimiterBytes bounds the memory of Caps' per-source rate limiters at
// the default MaxTrackedSources: a rate.Limiter, its key and its map entry
// each, under 256 bytes.
const CapsLimiterBytes = defaultMaxTrackedSources * 256

const (
	defaultIPv6Prefix        = 64
	defaultMaxTrackedSources = 4096
	// sweepEvery bounds how often a full limiter table is scanned, so a
	// flood from many sources costs O(1) per attempt.
	sweepEvery = 100 * time.Millisecond
)

// Caps is the admission state shared by every client's policy actor of one
// relay: how many sessions are admitted, per source, and each source's rate
// of new sessions. Create one per relay and capture it in the policy
// Factory. It is safe for concurrent use; it is consulted once per new
// session, never per datagram.
//
// A session counts from Admit until Release, which its policy actor calls
// when it stops (the supervisor stops it when the session ends or is
// refused). Caps is the one owner of the relay's per-source session counts:
// every session of a WireGuard relay is admitted through it, and it counts
// admissions still in flight, which a count of live sessions would miss.
// Live sessions are never evicted to make room.
type Caps struct {
	cfg CapsConfig

	mu        sync.Mutex
	total     int
	perSource map[netip.Prefix]int
	limiters  map[netip.Prefix]*rate.Limiter
	lastSweep time.Time
}

// NewCaps returns the caps of one relay.
func NewCaps(cfg CapsConfig) *Caps {
	return &Caps{
		cfg:       cfg.withDefaults(),
		perSource: make(map[netip.Prefix]int),
		limiters:  make(map[netip.Prefix]*rate.Limiter),
	}
}

// withDefaults fills in the defaults of unset fields.
func (cfg CapsConfig) withDefaults() CapsConfig {
	if cfg.IPv6Prefix <= 0 || cfg.IPv6Prefix > 128 {
		cfg.IPv6Prefix = defaultIPv6Prefix
	}
	if cfg.MaxTrackedSources <= 0 {
		cfg.MaxTrackedSources = defaultMaxTrackedSources
	}
	cfg.SourceBurst = max(cfg.SourceBurst, 1)
	return cfg
}

// Reconfigure changes the caps in place (a reload): the sessions admitted
// and not yet released still count, under the new caps. Lowering a cap
// below what is held evicts no one; new sessions are refused until enough
// have ended. Each source's rate limiter keeps the tokens it has and
// refills at the new rate, up to the new burst. IPv6Prefix does not change:
// the counts are kept by source, and a source's key must stay the same
// until its sessions are released.
func (c *Caps) Reconfigure(cfg CapsConfig, now time.Time) {
	cfg = cfg.withDefaults()
	c.mu.Lock()
	defer c.mu.Unlock()
	cfg.IPv6Prefix = c.cfg.IPv6Prefix
	rateChanged := cfg.SourceRate != c.cfg.SourceRate || cfg.SourceBurst != c.cfg.SourceBurst
	c.cfg = cfg
	if !rateChanged {
		return
	}
	if cfg.SourceRate <= 0 || cfg.SourceRate == rate.Inf {
		clear(c.limiters) // no rate: no limiter is consulted any more
		return
	}
	for _, l := range c.limiters {
		l.SetLimitAt(now, cfg.SourceRate)
		l.SetBurstAt(now, cfg.SourceBurst)
	}
}

// Source returns the key under which ip is counted: the IPv4 address, or
// the IPv6 address's IPv6Prefix.
func (c *Caps) Source(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = c.cfg.IPv6Prefix
	}
	p, _ := ip.Prefix(bits) // fails only for an invalid ip: the zero Prefix
	return p
}

// Admit decides whether a new session from ip may open at now. If ok, the
// session counts against the caps until Release(ip).
func (c *Caps) Admit(ip netip.Addr, now time.Time) (reason string, ok bool) {
	src := c.Source(ip)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg.MaxSessions > 0 && c.total >= c.cfg.MaxSessions {
		return ReasonMaxSessions, false
	}
	if c.cfg.MaxPerSource > 0 && c.perSource[src] >= c.cfg.MaxPerSource {
		return ReasonMaxSessionsPerIP, false
	}
	if c.cfg.SourceRate > 0 && c.cfg.SourceRate != rate.Inf && !c.limiter(src, now).AllowN(now, 1) {
		return ReasonNewSessionRate, false
	}
	c.total++
	c.perSource[src]++
	return "", true
}

// Release ends the count of a session Admit admitted from ip.
func (c *Caps) Release(ip netip.Addr) {
	src := c.Source(ip)
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.perSource[src]
	if !ok {
		return
	}
	c.total--
	if n <= 1 {
		delete(c.perSource, src)
	} else {
		c.perSource[src] = n - 1
	}
}

// Sessions returns how many admitted sessions are counted, in all and from
// ip's source.
func (c *Caps) Sessions(ip netip.Addr) (total, fromSource int) {
	src := c.Source(ip)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total, c.perSource[src]
}

// Limit returns the cap on sessions in all (CapsConfig.MaxSessions; zero:
// none).
func (c *Caps) Limit() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.MaxSessions
}

// TrackedSources returns how many per-source rate limiters are kept.
func (c *Caps) TrackedSources() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.limiters)
}

// limiter returns src's rate limiter, making room for it if needed. It is
// called with c.mu held.
func (c *Caps) limiter(src netip.Prefix, now time.Time) *rate.Limiter {
	if l := c.limiters[src]; l != nil {
		return l
	}
	if len(c.limiters) >= c.cfg.MaxTrackedSources {
		if now.Sub(c.lastSweep) >= sweepEvery || now.Before(c.lastSweep) {
			c.lastSweep = now
			burst := float64(c.cfg.SourceBurst)
			for k, l := range c.limiters {
				if l.TokensAt(now) >= burst {
					delete(c.limiters, k)
				}
			}
		}
		for k := range c.limiters {
			if len(c.limiters) < c.cfg.MaxTrackedSources {
				break
			}
			delete(c.limiters, k)
		}
	}
	l := rate.NewLimiter(c.cfg.SourceRate, c.cfg.SourceBurst)
	c.limiters[src] = l
	return l
}
