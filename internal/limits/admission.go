package limits

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
	"unsafe"
)

// The admission budget's defaults, with the reasons. They are not settings:
// they only bound what a flood can make the relay do, far above what
// genuine clients ask for; an operator who wants tighter limits per source
// has --new-sessions-per-ip and --max-sessions-per-ip (the Caps policy).
const (
	// SourceAdmissionRate and SourceAdmissionBurst budget the new sessions
	// one source (an IPv4 address or an IPv6 /64) may start asking for:
	// 20 a second, bursts of 40. A device opens one session per client
	// ID and re-handshakes every 2 minutes on the session it has; 40 at
	// once covers a household or a small office coming back together.
	SourceAdmissionRate  = 20
	SourceAdmissionBurst = 40
	// AdmissionRate and AdmissionBurst budget the new sessions all sources
	// together may start asking for: 5 000 a second, bursts of 5 000, so
	// that a burst of new clients at 5 000 a second (a relay restarted
	// without its state file, a network of clients coming back at once)
	// opens every session. What bounds it is the supervisor, the relay's
	// one shared step, where datagrams wait while it opens a session: an
	// admission costs it 31-41 µs of its thread (a policy answer, a spare
	// upstream socket dialled ahead by another goroutine, the session
	// actor, the first datagram sent; BenchmarkAdmission in
	// actors/supervisor, on 2 cores, supervisor-µs/session), so 5 000 a
	// second keep admissions under a fifth of a core and routing for the
	// sessions that exist is not starved; the burst, opened at once, is
	// under 0.2 s of it. 5 000 a second open a full default relay (16 384
	// sessions) from nothing in 3.3 s; sessions restored from the state
	// file do not count. How much memory the sessions a flood opens hold is
	// bounded by the session cap, not by this rate.
	AdmissionRate  = 5000
	AdmissionBurst = 5000
	// AdmissionSources is how many sources have a bucket of their own at a
	// time. A source that has none starts with a full one, so evicting a
	// source only forgets that it was busy; the relay-wide budget bounds
	// what many sources can do together.
	AdmissionSources = 4096
)

// admissionWays is how many sources share a set of the table; a new source
// takes the set's fullest (or least recently used) bucket.
const admissionWays = 4

// AdmissionConfig configures an Admission. Zero fields take the defaults
// above.
type AdmissionConfig struct {
	SourceRate, SourceBurst float64
	Rate, Burst             float64
	Sources                 int
	// IPv6Prefix is how many leading bits of an IPv6 address name one
	// source (default 64, as for Caps).
	IPv6Prefix int
}

// bucket is a token bucket with its own clock, in nanoseconds since the
// budget's epoch.
type bucket struct {
	tokens float64
	last   int64
}

// refill brings b's tokens to at, capped at burst.
func (b *bucket) refill(at int64, rate, burst float64) {
	if d := at - b.last; d > 0 {
		b.tokens = min(burst, b.tokens+float64(d)*rate/1e9)
		b.last = at
	}
}

type sourceBucket struct {
	src  [16]byte // the source's address, masked to its prefix (IPv4 as ::ffff:a.b.c.d)
	used bool
	bucket
}

// Admission is the relay's budget for opening sessions, consulted for every
// handshake initiation that would open one before anything is allocated for
// it: a token bucket per source and one for all sources. Its tables have a
// fixed size and it allocates nothing after NewAdmission. It is safe for
// concurrent use (one lock): the supervisors of a relay share one.
type Admission struct {
	cfg    AdmissionConfig
	seed   maphash.Seed
	epoch  time.Time
	mu     sync.Mutex
	global bucket
	table  []sourceBucket
	sets   uint64
}

// NewAdmission returns a budget with full buckets. now is its epoch: the
// times given to Allow must not be before it.
func NewAdmission(cfg AdmissionConfig, now time.Time) *Admission {
	cfg = cfg.withDefaults()
	sets := 1
	for sets*admissionWays < cfg.Sources {
		sets *= 2
	}
	return &Admission{
		cfg:    cfg,
		seed:   maphash.MakeSeed(),
		epoch:  now,
		global: bucket{tokens: cfg.Burst},
		table:  make([]sourceBucket, sets*admissionWays),
		sets:   uint64(sets),
	}
}

// Reconfigure changes the rates and bursts in place (a reload): every
// bucket keeps its tokens, at most the new burst. The number of sources
// tracked and the IPv6 prefix stay as they were.
func (a *Admission) Reconfigure(cfg AdmissionConfig) {
	cfg = cfg.withDefaults()
	a.mu.Lock()
	defer a.mu.Unlock()
	cfg.Sources, cfg.IPv6Prefix = a.cfg.Sources, a.cfg.IPv6Prefix
	a.cfg = cfg
	a.global.tokens = min(a.global.tokens, cfg.Burst)
	for i := range a.table {
		a.table[i].tokens = min(a.table[i].tokens, cfg.SourceBurst)
	}
}

// withDefaults fills in the zero fields.
func (cfg AdmissionConfig) withDefaults() AdmissionConfig {
	if cfg.SourceRate <= 0 {
		cfg.SourceRate = SourceAdmissionRate
	}
	if cfg.SourceBurst < 1 {
		cfg.SourceBurst = SourceAdmissionBurst
	}
	if cfg.Rate <= 0 {
		cfg.Rate = AdmissionRate
	}
	if cfg.Burst < 1 {
		cfg.Burst = AdmissionBurst
	}
	if cfg.Sources <= 0 {
		cfg.Sources = AdmissionSources
	}
	if cfg.IPv6Prefix <= 0 || cfg.IPv6Prefix > 128 {
		cfg.IPv6Prefix = defaultIPv6Prefix
	}
	return cfg
}

// Sources is how many sources the budget can track at once.
func (a *Admission) Sources() int { return len(a.table) }

// AdmissionBytes is the memory a budget tracking sources sources (as
// NewAdmission rounds them) takes: all of it, from NewAdmission on.
func AdmissionBytes(sources int) int {
	sets := 1
	for sets*admissionWays < sources {
		sets *= 2
	}
	return sets*admissionWays*int(unsafe.Sizeof(sourceBucket{})) + int(unsafe.Sizeof(Admission{}))
}

// Allow reports whether a new session may be asked for from ip at now, and
// if so takes a token from ip's source's bucket and from the relay-wide
// one. A refusal takes nothing.
func (a *Admission) Allow(ip netip.Addr, now time.Time) bool {
	key := a.source(ip)
	at := int64(now.Sub(a.epoch))
	set := maphash.Bytes(a.seed, key[:]) % a.sets
	a.mu.Lock()
	defer a.mu.Unlock()
	a.global.refill(at, a.cfg.Rate, a.cfg.Burst)
	b := a.find(key, set, at)
	b.refill(at, a.cfg.SourceRate, a.cfg.SourceBurst)
	if b.tokens < 1 || a.global.tokens < 1 {
		return false
	}
	b.tokens--
	a.global.tokens--
	return true
}

// find returns the bucket of source key in set, taking one for it if it has
// none: an unused one, else the one with the most tokens at at (a full one
// is as good as new), else the least recently used. Called with a.mu held.
func (a *Admission) find(key [16]byte, set uint64, at int64) *sourceBucket {
	ways := a.table[set*admissionWays : (set+1)*admissionWays]
	for i := range ways {
		if b := &ways[i]; b.used && b.src == key {
			return b
		}
	}
	var victim *sourceBucket
	best := 0.0
	for i := range ways {
		b := &ways[i]
		if !b.used {
			victim = b
			break
		}
		tokens := min(a.cfg.SourceBurst, b.tokens+float64(max(at-b.last, 0))*a.cfg.SourceRate/1e9)
		if victim == nil || tokens > best || (tokens == best && b.last < victim.last) {
			victim, best = b, tokens
		}
	}
	*victim = sourceBucket{src: key, used: true, bucket: bucket{tokens: a.cfg.SourceBurst, last: at}}
	return victim
}

// source is ip's source as a table key: the IPv4 address, or the IPv6
// address masked to IPv6Prefix bits.
func (a *Admission) source(ip netip.Addr) [16]byte {
	ip = ip.Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(a.cfg.IPv6Prefix); err == nil {
			ip = p.Addr()
		}
	}
	return ip.As16()
}
