package supervisor

import (
	"net/netip"
	"time"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/roam"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Plain WireGuard clients (zero_id: track). Their datagrams carry the zero
// client ID, so the supervisor finds their sessions by what WireGuard
// itself carries:
//
//   - a transport message, a cookie reply or a handshake response from the
//     client carries a receiver index the upstream assigned (the sender
//     index of the upstream's handshake response, or of an initiation the
//     upstream sent). The session sees those go by and tells the
//     supervisor (messages.IndexLearned) before the client can use them;
//     the index table routes by them. This is how a roaming client's
//     datagrams reach its session from a new address; internal/roam then
//     decides, as for any session, whether they move it.
//   - a handshake initiation carries only the client's own fresh index. One
//     from an address that is a session's confirmed client address is that
//     session's client re-keying (the address table; the session reports
//     its moves, messages.ClientConfirmed). One from any other address opens
//     a session, through the same admission path as a client ID's.
//
// So two plain clients behind one NAT address are two sessions (their
// source ports differ), and a rekey from an address and port already
// confirmed for a session is that session. The one case this cannot
// follow: a client that changes address and re-handshakes before sending
// anything else (no index to recognise it by) gets a new session, on a new
// upstream port. The handshake completes (it is a fresh one), WARP sees a
// new 4-tuple, and the old session idles out.
//
// The index table is fed by what the upstream sends, which anyone with a
// WARP account can make it send, so it is bounded: each session keeps
// in it at most the roam.MaxIndexes indexes its roam.Peer keeps (the
// newest: an older one is evicted), each lives for roam.IndexMaxAge, and
// the table holds at most MaxTrackedIndexes in all; an index that finds no
// room is refused and counted. A client's datagram that no index and no
// confirmed address places is dropped as zero_id_unknown_index.
//
// Workers (issue 14) steer datagrams by client ID: every plain client's
// datagrams land on the first, so these tables live in one supervisor.

// key names a session, and an admission, in the supervisor's tables: a
// client ID as its 24-bit number, or, for a tracked plain client, which has
// none, a number from firstPlainKey up that no client ID reaches. Sessions
// carry it as their handle (session.Config.Handle). It never shows as a
// client ID: a plain session's SessionInfo.Client is the zero ID.
type key uint32

// firstPlainKey is the first key of plain clients: above every client ID.
const firstPlainKey key = 1 << 24

// idKey is the key of client ID id.
func idKey(id wgproto.ClientID) key { return key(id[0])<<16 | key(id[1])<<8 | key(id[2]) }

// isPlain reports whether k names a tracked plain client.
func (k key) isPlain() bool { return k >= firstPlainKey }

// MaxTrackedIndexes bounds the index table: roam.MaxIndexes for each of
// the 16 384 sessions of the default session cap (limits.DefaultMaxSessions
// at most), 131 072 indexes in about 4 MiB. A relay whose cap is raised
// further, and whose plain clients all hold their peers' full tables,
// refuses the indexes beyond it (counted, logged); their clients still
// reach their sessions from their confirmed addresses, and roam again once
// older indexes age out.
const MaxTrackedIndexes = 1 << 17

// sweepEvery is how often, at most, a full index table is swept of
// indexes older than roam.IndexMaxAge before an index is refused.
const sweepEvery = time.Second

// plainSession is what the supervisor knows of a tracked plain session:
// its client's confirmed address and the indexes it learned.
type plainSession struct {
	addr    netip.AddrPort
	indexes [roam.MaxIndexes]trackedIndex // the newest, as its roam.Peer keeps them
	learned uint64                        // indexes learned so far, numbering them
}

// trackedIndex is one index of a session, numbered in the order the
// session learned it (or learned it again); number zero is a free slot.
type trackedIndex struct {
	index uint32
	n     uint64
}

// indexEntry is the index table's record of one index.
type indexEntry struct {
	e  *entry
	at time.Duration
}

// plainTable holds the supervisor's tables of plain clients. It is the
// supervisor's own: only its goroutine touches it.
type plainTable struct {
	epoch   time.Time
	byIndex map[uint32]indexEntry
	// byAddr maps a confirmed client address to its session, and the
	// address of an admission waiting for its policy to its admission.
	byAddr   map[netip.AddrPort]key
	capacity int
	next     key // the next plain key to hand out
	swept    time.Duration
	// evicted counts indexes a session's newer ones pushed out, refused
	// those for which the table had no room.
	evicted, refused uint64
}

func newPlainTable(now time.Time, capacity int) plainTable {
	return plainTable{
		epoch:    now,
		byIndex:  make(map[uint32]indexEntry),
		byAddr:   make(map[netip.AddrPort]key),
		capacity: capacity,
		next:     firstPlainKey,
		swept:    -sweepEvery,
	}
}

// since is now as the table counts time.
func (t *plainTable) since(now time.Time) time.Duration { return now.Sub(t.epoch) }

// newKey returns a plain key that inUse does not know, counting up and
// wrapping past the largest to firstPlainKey.
func (t *plainTable) newKey(inUse func(key) bool) key {
	for {
		k := t.next
		t.next++
		if t.next < firstPlainKey {
			t.next = firstPlainKey
		}
		if !inUse(k) {
			return k
		}
	}
}

// byReceiver returns the session whose live learned indexes hold index, or
// nil. An index older than roam.IndexMaxAge is forgotten here.
func (t *plainTable) byReceiver(index uint32, now time.Time) *entry {
	ie, ok := t.byIndex[index]
	if !ok {
		return nil
	}
	if t.since(now)-ie.at >= roam.IndexMaxAge {
		delete(t.byIndex, index)
		return nil
	}
	return ie.e
}

// learn records that e's upstream assigned it index: it replaces the
// oldest of e's indexes if e holds roam.MaxIndexes already (evicted), and
// is refused (refused) if the table is full. An index another session
// held moves to e: the newest wins.
func (t *plainTable) learn(e *entry, index uint32, now time.Time) {
	ps, at := e.plain, t.since(now)
	slot := 0
	for i := range ps.indexes {
		x := &ps.indexes[i]
		if x.n != 0 && x.index == index {
			slot = i
			break
		}
		if s := &ps.indexes[slot]; s.n != 0 && (x.n == 0 || x.n < s.n) {
			slot = i
		}
	}
	old := &ps.indexes[slot]
	if old.n != 0 && old.index != index {
		t.drop(e, old.index)
		t.evicted++
	}
	*old = trackedIndex{}
	if _, held := t.byIndex[index]; !held && len(t.byIndex) >= t.capacity {
		if at-t.swept >= sweepEvery {
			t.swept = at
			t.sweep(at)
		}
		if len(t.byIndex) >= t.capacity {
			t.refused++
			return
		}
	}
	ps.learned++
	*old = trackedIndex{index: index, n: ps.learned}
	t.byIndex[index] = indexEntry{e: e, at: at}
}

// sweep forgets every index older than roam.IndexMaxAge.
func (t *plainTable) sweep(at time.Duration) {
	for index, ie := range t.byIndex {
		if at-ie.at >= roam.IndexMaxAge {
			delete(t.byIndex, index)
		}
	}
}

// drop forgets index if it is e's.
func (t *plainTable) drop(e *entry, index uint32) {
	if ie, ok := t.byIndex[index]; ok && ie.e == e {
		delete(t.byIndex, index)
	}
}

// confirm records that e's client is now at addr.
func (t *plainTable) confirm(e *entry, addr netip.AddrPort) {
	if k, ok := t.byAddr[e.plain.addr]; ok && k == e.key {
		delete(t.byAddr, e.plain.addr)
	}
	e.plain.addr = addr
	t.byAddr[addr] = e.key
}

// forget removes every trace of e, a session that ended.
func (t *plainTable) forget(e *entry) {
	for _, x := range e.plain.indexes {
		if x.n != 0 {
			t.drop(e, x.index)
		}
	}
	t.unadmit(e.plain.addr, e.key)
}

// unadmit forgets that addr belongs to k.
func (t *plainTable) unadmit(addr netip.AddrPort, k key) {
	if got, ok := t.byAddr[addr]; ok && got == k {
		delete(t.byAddr, addr)
	}
}

// indexes is how many indexes the table holds.
func (t *plainTable) indexes() int { return len(t.byIndex) }

// keyID is the client ID of k, a client ID's key.
func keyID(k key) wgproto.ClientID { return wgproto.ClientID{byte(k >> 16), byte(k >> 8), byte(k)} }

// indexLearned enters an index a tracked plain session learned into the
// index table, if the session is still live.
func (s *Supervisor) indexLearned(m *messages.IndexLearned) {
	if e := s.sessions[key(m.Handle)]; e != nil && e.plain != nil {
		before := s.plain.refused
		s.plain.learn(e, m.Index, s.now())
		if s.plain.refused != before {
			s.warn.tableFull(s.plain.indexes(), s.now)
		}
	}
}

// clientConfirmed moves a tracked plain session's address in the address
// table, if the session is still live.
func (s *Supervisor) clientConfirmed(m *messages.ClientConfirmed) {
	if e := s.sessions[key(m.Handle)]; e != nil && e.plain != nil && m.Addr.IsValid() {
		s.plain.confirm(e, m.Addr)
	}
}
