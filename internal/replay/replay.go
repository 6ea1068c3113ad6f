// Package replay remembers recent WireGuard handshake initiations, so that
// one initiation opens at most one session.
//
// A WARP client writes its client ID into bytes 1..3 of an initiation after
// computing mac1 (internal/wgproto), so one valid initiation is valid under
// every client ID: replayed with 200 IDs it would open 200 sessions, each
// with its socket and policy actor, and no mac1 check can tell. A genuine
// client never sends the same initiation twice under two IDs: each carries
// a fresh ephemeral key and timestamp, and a retransmission is a new
// initiation. So the relay remembers each initiation that asked for a
// session, keyed by its bytes other than 1..3, with the client ID it asked
// under; the same bytes under another ID within TTL open nothing.
//
// The table has a fixed size and allocates nothing after New. Entries are
// keyed by a 64-bit keyed hash (hash/maphash, seeded per table, so that
// nobody outside the process can aim collisions at an entry). It is safe
// for concurrent use: the supervisors of a relay share one table, each set
// of entries behind one of a few striped locks.
package replay

import (
	"hash/maphash"
	"sync"
	"time"
	"unsafe"

	"github.com/udpfwd/udpfwd/internal/wgproto"
)

const (
	// TTL is how long an initiation is remembered: three minutes,
	// WireGuard's RejectAfterTime. The upstream refuses an initiation whose
	// timestamp is not newer than the newest it accepted from that key, and
	// an active client makes a newer handshake every two minutes
	// (RekeyAfterTime), so a replay older than that gets nothing from the
	// upstream anyway; and even past TTL one initiation opens at most one
	// more session per TTL.
	TTL = 3 * time.Minute
	// Entries is the default number of initiations remembered: 65 536, in
	// 1 MiB (16 bytes each). Only initiations that passed the relay's
	// admission budget are recorded, so pushing one out of the table takes
	// 65 536 admissions, which is already more sessions than one replayed
	// initiation could open while remembered.
	Entries = 1 << 16
)

// ways is how many entries share a set; a new entry replaces the oldest of
// its set.
const ways = 4

// stripes is the number of locks; a set's lock is its index modulo this.
const stripes = 64

type entry struct {
	key    uint64
	at     uint32 // seconds since the table's epoch, plus one; zero: empty
	client wgproto.ClientID
}

type set [ways]entry

// Table remembers initiations. Create it with New.
type Table struct {
	seed  maphash.Seed
	ttl   uint32 // in seconds
	epoch time.Time
	sets  []set
	mask  uint64
	locks [stripes]struct {
		sync.Mutex
		_ [56]byte // one lock per cache line
	}
}

// New returns a table of at least entries entries (rounded up to a power of
// two, at least one set) that remembers each initiation for ttl (whole
// seconds, at least one). now is the table's epoch: the times given to its
// methods must not be before it.
func New(entries int, ttl time.Duration, now time.Time) *Table {
	n := 1
	for n*ways < entries {
		n *= 2
	}
	return &Table{
		seed:  maphash.MakeSeed(),
		ttl:   uint32(max(ttl/time.Second, 1)),
		epoch: now,
		sets:  make([]set, n),
		mask:  uint64(n - 1),
	}
}

// Capacity is how many initiations the table can remember.
func (t *Table) Capacity() int { return len(t.sets) * ways }

// Bytes is the memory a table of entries entries (as New rounds them)
// takes: all of it, from New on.
func Bytes(entries int) int {
	n := 1
	for n*ways < entries {
		n *= 2
	}
	return n*int(unsafe.Sizeof(set{})) + int(unsafe.Sizeof(Table{}))
}

// Key is the key of the initiation b: a keyed hash of byte 0 and bytes
// 4..147, so the same initiation has the same key under every client ID.
// b must be a handshake initiation (wgproto.InitiationSize bytes).
func (t *Table) Key(b []byte) uint64 {
	var scratch [wgproto.InitiationSize]byte
	copy(scratch[:], b)
	scratch[1], scratch[2], scratch[3] = 0, 0, 0
	return maphash.Bytes(t.seed, scratch[:])
}

// Replayed reports whether the initiation with key k was recorded in the
// last TTL under a client ID other than client.
func (t *Table) Replayed(k uint64, client wgproto.ClientID, now time.Time) bool {
	s, mu := t.set(k)
	at := t.stamp(now)
	mu.Lock()
	defer mu.Unlock()
	for i := range s {
		e := &s[i]
		if e.at != 0 && e.key == k && t.live(e, at) {
			return e.client != client
		}
	}
	return false
}

// Seen reports whether the initiation with key k was recorded in the last
// TTL under any client ID, the zero one included. A plain client's
// initiation (zero client ID) asks for a new session only from an address
// that has none, so one already seen is a replay wherever it comes from.
func (t *Table) Seen(k uint64, now time.Time) bool {
	s, mu := t.set(k)
	at := t.stamp(now)
	mu.Lock()
	defer mu.Unlock()
	for i := range s {
		e := &s[i]
		if e.at != 0 && e.key == k && t.live(e, at) {
			return true
		}
	}
	return false
}

// Record remembers that the initiation with key k asked for a session for
// client at now, and reports whether it may: false if it is live in the
// table under another client ID (another supervisor recorded it first). A
// retransmission under the same ID refreshes its entry. A new entry takes
// an empty or expired place in its set, else the oldest entry's.
func (t *Table) Record(k uint64, client wgproto.ClientID, now time.Time) bool {
	s, mu := t.set(k)
	at := t.stamp(now)
	mu.Lock()
	defer mu.Unlock()
	slot := -1
	for i := range s {
		e := &s[i]
		if e.at != 0 && e.key == k {
			if t.live(e, at) && e.client != client {
				return false
			}
			slot = i
			break
		}
	}
	if slot < 0 {
		slot = 0
		for i := range s {
			if s[i].at == 0 || !t.live(&s[i], at) {
				slot = i
				break
			}
			if s[i].at < s[slot].at {
				slot = i
			}
		}
	}
	s[slot] = entry{key: k, at: at, client: client}
	return true
}

// set returns the set of key k and its lock.
func (t *Table) set(k uint64) (*set, *sync.Mutex) {
	i := k & t.mask
	return &t.sets[i], &t.locks[i%stripes].Mutex
}

// stamp turns now into the table's time: seconds since its epoch, plus one.
func (t *Table) stamp(now time.Time) uint32 {
	d := now.Sub(t.epoch)
	if d < 0 {
		d = 0
	}
	return uint32(d/time.Second) + 1
}

// live reports whether e is within its TTL at at.
func (t *Table) live(e *entry, at uint32) bool { return at < e.at || at-e.at < t.ttl }
