// Package roam decides where a session's replies go: the one place that
// decides whether a datagram from a new client address moves the session.
// It does no I/O, so it can be tested and fuzzed on its own.
//
// # The rule
//
// Anyone can send a datagram carrying a victim's 24-bit client ID, so "reply
// to the newest source" would let one forged datagram take a victim's
// replies. A Peer moves the reply address only on evidence that the sender
// took part in the victim's WireGuard session, evidence an off-path attacker
// does not have:
//
//  1. It learns the indexes the upstream assigned to this session: the
//     sender index (bytes 4..7) of each handshake response (and of each
//     handshake initiation the upstream itself sends). Only the client, and
//     whoever sees the upstream's replies, knows them.
//  2. A transport message (type 4) from a new address moves the session if
//     its receiver index is a learned, live index. This is how a roaming
//     client's next keepalive or data packet moves it. Seen through
//     FromTransport, it must also carry a higher counter than every
//     transport seen with that index, so that one overtaken on its way
//     (sent from the address the client has left) does not move it back.
//  3. A handshake initiation (type 1) from a new address is remembered as
//     pending. When the upstream's handshake response whose receiver index
//     equals that initiation's sender index comes back, the response goes
//     to the pending address and the session moves there: the upstream
//     itself vouched for that initiation.
//  4. Everything else from a new address (a forged transport with a guessed
//     index, a handshake response or cookie sent by a client) is forwarded
//     upstream but moves nothing: a genuine client's handshake must still
//     complete, and the upstream drops what is not genuine.
//
// The address that opened the session is confirmed from the start.
//
// # Before the upstream has answered
//
// The rules rest on the upstream speaking WireGuard. Until it has sent its
// first handshake response in this session, a Peer follows the newest
// client address, as plain forwarding does (it still records initiations,
// so that the response goes to the address whose initiation it answers).
// Nothing is lost by this: before a response there is no WireGuard session
// whose replies could be taken, and a genuine session's first response
// comes one round trip after it opens. An upstream that never answers
// handshakes (an echo server under a load generator, a test harness) gets
// the roaming a user expects: replies follow the client to wherever it
// sends from now. From the first response on, the rules above hold for
// the rest of the session, across restarts.
//
// # Cookie replies
//
// A cookie reply (type 3) answers an initiation the upstream was too busy
// to process; its receiver index (bytes 4..7) is that initiation's sender
// index. A cookie reply matching a pending initiation goes to the pending
// address, without confirming it and without moving the session. Sending
// it to the confirmed address instead would make a client that roams while
// the upstream is under load unable ever to finish a handshake from its new
// address. It gives the pending address nothing of the victim's: the cookie
// is encrypted for whoever sent that initiation (keyed by the upstream's
// public key and the initiation's mac1) and only lets initiations that pass
// through this same relay session carry a valid mac2; it is smaller than the
// initiation that asked for it, so it amplifies nothing.
//
// # Bounds and ageing
//
// A Peer has fixed-size tables. It allocates nothing per datagram: the one
// allocation it makes is the overflow of its pending table, when a second
// initiation is pending at once, kept until every entry in it is taken or
// has expired (Trim), so that an idle session holds 232 bytes here:
//
//   - Learned indexes: the newest MaxIndexes, each live for IndexMaxAge
//     after the relay saw it. WireGuard rekeys every 120 s (RekeyAfterTime)
//     and never sends or accepts on a keypair older than 180 s
//     (RejectAfterTime), so a genuine client's current index is at most
//     180 s old plus the one-way delay from the relay to the client;
//     IndexMaxAge = 240 s leaves a minute for that. Normally two or three
//     indexes are live; the table of 8 absorbs bursts of handshakes (lost
//     responses and retries) without evicting the current one. Fewer live indexes also means fewer chances
//     for an attacker guessing a 32-bit index (see Security in the README).
//   - Pending initiations: at most MaxPending, one per client address (a new
//     initiation from an address replaces its older one, as wireguard-go
//     forgets a handshake's index when it sends the next initiation), each
//     live for PendingMaxAge. An attacker spraying initiations from one
//     address occupies one slot; from many addresses it can evict a genuine
//     roaming client's pending handshake (that client's handshake then
//     completes only once the flood stops, or it roams by rule 2), but it
//     cannot grow memory or take the session.
//
// If two different addresses have a pending initiation with the same sender
// index when its response comes (an attacker guessed the index), the
// response goes to the confirmed address and nothing moves.
package roam

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Bounds of a Peer's tables; see the package documentation for why.
const (
	// MaxIndexes is how many learned upstream indexes a Peer keeps.
	MaxIndexes = 8
	// IndexMaxAge is how long a learned index can move the session:
	// WireGuard's RejectAfterTime (180 s) plus a minute for delays.
	IndexMaxAge = 240 * time.Second
	// MaxPending is how many pending initiations a Peer keeps.
	MaxPending = 8
	// PendingMaxAge is how long a pending initiation waits for its
	// response: twice WireGuard's RekeyTimeout (5 s), after which the
	// initiator has given up on it and sent a new one.
	PendingMaxAge = 10 * time.Second
)

// endpoint is a client address together with the index of the relay's
// listening socket it sent to; replies must leave by the same socket to pass
// the client's NAT.
type endpoint struct {
	addr     netip.AddrPort
	listener uint8
}

// Times in a Peer's tables are Unix nanoseconds (time.Time.UnixNano): 8
// bytes where a time.Time takes 24 and a pointer the garbage collector
// scans. Ages are differences of wall-clock readings, as they are for a
// restored state's times anyway.

type learnedIndex struct {
	index uint32
	used  bool
	// seen says counter is set: the highest transport counter seen with
	// this index (FromTransport).
	seen    bool
	at      int64
	counter uint64
}

type pendingInit struct {
	addr     netip.AddrPort
	at       int64
	index    uint32
	listener uint8
	used     bool
}

func (e *pendingInit) endpoint() endpoint { return endpoint{e.addr, e.listener} }

// morePending is the part of the pending table past its first entry. Most
// sessions never need it (one client address, one handshake at a time), so
// a Peer allocates it only when a second initiation is pending at once, and
// lets it go when every entry in it is taken again.
type morePending [MaxPending - 1]pendingInit

// Peer tracks where a session's replies go. Its zero value is ready to use
// and follows the rules in the package documentation; the address of the
// first datagram it sees becomes the confirmed address.
//
// A Peer is owned by one session actor and is not safe for concurrent use.
// It takes 232 bytes, and 336 more while two initiations or more are
// pending at once.
type Peer struct {
	// Forward marks a session whose datagrams need not be WireGuard: one
	// of the relay's forward mode, or one that carried a datagram outside
	// WireGuard's framing (message_types: any). There are no headers to
	// check, so the reply address follows every datagram's source, for the
	// whole session (a WireGuard session does so only until the upstream's
	// first handshake response; see the package documentation). It must
	// stay false for sessions of well-formed WireGuard.
	Forward bool

	answered bool // the upstream has sent a handshake response
	cur      endpoint
	indexes  [MaxIndexes]learnedIndex
	// The pending table: entry 0 here, entries 1..MaxPending-1 in more
	// (nil while all of them are unused).
	pending0 pendingInit
	more     *morePending
}

// Addr is the confirmed address replies go to (the zero value before the
// first datagram).
func (p *Peer) Addr() netip.AddrPort { return p.cur.addr }

// Listener is the index of the listening socket replies leave by.
func (p *Peer) Listener() uint8 { return p.cur.listener }

// Following reports whether the Peer follows the newest client address
// (forward mode, or before the upstream's first handshake response) rather
// than moving only on evidence: a move now is no evidence of anything.
func (p *Peer) Following() bool { return p.Forward || !p.answered }

// Confirmed reports whether from, on the listening socket of index
// listener, is the confirmed address.
// A session can use it to count datagrams from unconfirmed addresses.
func (p *Peer) Confirmed(from netip.AddrPort, listener uint8) bool {
	return p.cur == endpoint{from, listener}
}

// FromClient records a datagram from the client with header h, sent from
// from to the relay's listening socket of index listener, at now (one
// reading per batch is enough). It reports whether the confirmed address
// moved. The datagram is forwarded upstream whatever it returns.
func (p *Peer) FromClient(now time.Time, h wgproto.Header, from netip.AddrPort, listener uint8) (moved bool) {
	ep := endpoint{from, listener}
	if !p.cur.addr.IsValid() {
		p.cur = ep // the address that opened the session
	}
	if p.Forward || !p.answered {
		if !p.Forward && h.Type == wgproto.TypeInitiation {
			p.addPending(now.UnixNano(), h.Index, ep)
		}
		if ep == p.cur {
			return false
		}
		p.cur = ep
		return true
	}
	switch h.Type {
	case wgproto.TypeTransport:
		if ep != p.cur && p.knows(now.UnixNano(), h.Index) {
			p.cur = ep
			return true
		}
	case wgproto.TypeInitiation:
		// Initiations from the confirmed address are remembered too, so a
		// guessed index from elsewhere is seen as a collision.
		p.addPending(now.UnixNano(), h.Index, ep)
	}
	return false
}

// FromTransport is FromClient for a transport message whose counter
// (bytes 8..15) is counter. A transport from a new address moves the
// session only if its counter is above every counter seen with its index:
// WireGuard counts each keypair's messages up, so a lower one was sent
// before a datagram already seen. This keeps a datagram that was overtaken
// (sent from the client's old address before it moved, and delivered late,
// as datagrams that another relay node forwards can be) from moving the
// session back to an address the client has left.
func (p *Peer) FromTransport(now time.Time, h wgproto.Header, counter uint64, from netip.AddrPort, listener uint8) (moved bool) {
	if p.Forward || !p.answered || h.Type != wgproto.TypeTransport {
		return p.FromClient(now, h, from, listener)
	}
	l := p.live(now.UnixNano(), h.Index)
	if l == nil {
		return false
	}
	newer := !l.seen || counter > l.counter
	if newer {
		l.counter, l.seen = counter, true
	}
	ep := endpoint{from, listener}
	if ep != p.cur && newer {
		p.cur = ep
		return true
	}
	return false
}

// live returns the live learned entry of index, or nil.
func (p *Peer) live(now int64, index uint32) *learnedIndex {
	for i := range p.indexes {
		l := &p.indexes[i]
		if l.used && l.index == index && now-l.at < int64(IndexMaxAge) {
			return l
		}
	}
	return nil
}

// FromUpstream records a datagram from upstream with header h at now and
// returns the address to send it to and the index of the listening socket
// to send it by. moved reports that this datagram confirmed a new address (a handshake
// response to a pending initiation): the session's address is now to. ok is
// false when there is no address yet.
func (p *Peer) FromUpstream(now time.Time, h wgproto.Header) (to netip.AddrPort, listener uint8, moved, ok bool) {
	if !p.cur.addr.IsValid() {
		return netip.AddrPort{}, 0, false, false
	}
	if p.Forward {
		return p.cur.addr, p.cur.listener, false, true
	}
	switch h.Type {
	case wgproto.TypeResponse:
		p.answered = true
		p.learn(now.UnixNano(), h.Index)
		if ep, found := p.takePending(now.UnixNano(), h.Receiver); found && ep != p.cur {
			p.cur = ep
			moved = true
		}
	case wgproto.TypeInitiation:
		// The upstream starts a handshake: the client's transport messages
		// will carry this index once it answers.
		p.learn(now.UnixNano(), h.Index)
	case wgproto.TypeCookie:
		if ep, found := p.takePending(now.UnixNano(), h.Index); found {
			return ep.addr, ep.listener, false, true
		}
	}
	return p.cur.addr, p.cur.listener, moved, true
}

// Trim forgets the pending initiations that have expired at now, and
// gives back the memory of the pending table's overflow once none is left
// in it. Nothing it forgets could still move the session or route a
// reply; call it now and then (a session does on its idle check) so that
// an initiation the upstream never answers does not hold the overflow.
func (p *Peer) Trim(now time.Time) {
	at := now.UnixNano()
	for i := range MaxPending {
		if e := p.slot(i); e != nil && e.used && at-e.at >= int64(PendingMaxAge) {
			*e = pendingInit{}
		}
	}
	p.dropMore()
}

// slot returns entry i of the pending table, or nil for an entry of the
// overflow while it is not allocated (such an entry is unused).
func (p *Peer) slot(i int) *pendingInit {
	if i == 0 {
		return &p.pending0
	}
	if p.more == nil {
		return nil
	}
	return &p.more[i-1]
}

// dropMore lets the overflow go if none of its entries is in use.
func (p *Peer) dropMore() {
	if p.more == nil {
		return
	}
	for i := range p.more {
		if p.more[i].used {
			return
		}
	}
	p.more = nil
}

// knows reports whether index is a live learned index.
func (p *Peer) knows(now int64, index uint32) bool {
	return p.live(now, index) != nil
}

// learn adds index (or refreshes it), in a free slot or else in place of
// the oldest entry.
func (p *Peer) learn(now int64, index uint32) {
	slot := 0
	for i := range p.indexes {
		l := &p.indexes[i]
		if l.used && l.index == index {
			l.at = now
			return
		}
		if s := &p.indexes[slot]; s.used && (!l.used || l.at < s.at) {
			slot = i
		}
	}
	p.indexes[slot] = learnedIndex{used: true, index: index, at: now}
}

// addPending remembers an initiation: one entry per endpoint, else a free
// or expired slot, else the oldest entry.
func (p *Peer) addPending(now int64, index uint32, ep endpoint) {
	slot, free := -1, -1
	for i := range MaxPending {
		e := p.slot(i)
		if e == nil { // the overflow is not allocated: every entry in it is free
			if free < 0 {
				free = i
			}
			break
		}
		if e.used && e.endpoint() == ep {
			slot = i
			break
		}
		if free < 0 && (!e.used || now-e.at >= int64(PendingMaxAge)) {
			free = i
		}
	}
	if slot < 0 {
		slot = free
	}
	if slot < 0 {
		slot = 0
		for i := range MaxPending {
			if p.slot(i).at < p.slot(slot).at {
				slot = i
			}
		}
	}
	if slot > 0 && p.more == nil {
		p.more = new(morePending)
	}
	*p.slot(slot) = pendingInit{used: true, index: index, addr: ep.addr, listener: ep.listener, at: now}
}

// takePending removes the live pending initiations with sender index index
// and returns their endpoint; found is false if there is none, or if
// several endpoints claim the index (a collision nobody can settle).
func (p *Peer) takePending(now int64, index uint32) (ep endpoint, found bool) {
	ambiguous := false
	for i := range MaxPending {
		e := p.slot(i)
		if e == nil {
			break
		}
		if !e.used || e.index != index {
			continue
		}
		if now-e.at < int64(PendingMaxAge) {
			if found && e.endpoint() != ep {
				ambiguous = true
			}
			ep, found = e.endpoint(), true
		}
		*e = pendingInit{}
	}
	p.dropMore()
	if ambiguous {
		return endpoint{}, false
	}
	return ep, found
}

// State is what a Peer knows that is worth keeping across a restart: the
// confirmed address and the learned indexes. Pending initiations are not
// kept; they live for seconds and the client retries. It encodes as JSON.
type State struct {
	// Addr is the confirmed client address.
	Addr netip.AddrPort `json:"addr"`
	// Listener is the index of the listening socket, by the relay's order
	// of listeners. Its key stays "via" so that saved states still load.
	Listener uint8 `json:"via"`
	// Answered records that the upstream has sent a handshake response, so
	// a new address must be confirmed (see the package documentation). It
	// alone says so: learned indexes do not, since an upstream that echoes
	// (or itself starts a handshake) teaches indexes without ever
	// answering one.
	Answered bool `json:"answered,omitempty"`
	// Indexes are the learned upstream indexes, oldest first.
	Indexes []LearnedIndex `json:"indexes,omitempty"`
}

// LearnedIndex is one upstream index and when the relay saw it.
type LearnedIndex struct {
	Index   uint32    `json:"index"`
	Learned time.Time `json:"learned"`
}

// State returns the Peer's state for persistence. It allocates; call it
// when saving, not per datagram.
func (p *Peer) State() State {
	s := State{Addr: p.cur.addr, Listener: p.cur.listener, Answered: p.answered}
	for _, l := range p.indexes {
		if l.used {
			s.Indexes = append(s.Indexes, LearnedIndex{Index: l.index, Learned: time.Unix(0, l.at).UTC()})
		}
	}
	slices.SortFunc(s.Indexes, func(a, b LearnedIndex) int { return a.Learned.Compare(b.Learned) })
	return s
}

// ErrNoAddress is returned by Restore for a state without a valid address.
var ErrNoAddress = errors.New("roam: state has no client address")

// Restore replaces the Peer's state with s, as saved by State, so that the
// Peer decides as the one that saved it would have: a session that followed
// the newest address (the upstream had not answered) still does, one under
// the rules stays under them. Of more than MaxIndexes indexes it keeps the
// newest; indexes too old to move the session are kept but age out as
// usual. Pending initiations are cleared (they live seconds, and the client
// retries). Forward is left as it is.
func (p *Peer) Restore(s State) error {
	if !s.Addr.IsValid() {
		return fmt.Errorf("restore %+v: %w", s, ErrNoAddress)
	}
	// States saved before addresses were unmapped on reading hold IPv4
	// clients of dual-stack sockets in their IPv4-mapped form.
	p.cur = endpoint{netip.AddrPortFrom(s.Addr.Addr().Unmap(), s.Addr.Port()), s.Listener}
	p.answered = s.Answered
	p.indexes = [MaxIndexes]learnedIndex{}
	p.pending0, p.more = pendingInit{}, nil
	idx := slices.Clone(s.Indexes)
	slices.SortStableFunc(idx, func(a, b LearnedIndex) int { return b.Learned.Compare(a.Learned) })
	for i, l := range idx[:min(len(idx), MaxIndexes)] {
		p.indexes[i] = learnedIndex{used: true, index: l.Index, at: unixNano(l.Learned)}
	}
	return nil
}

// unixNano is t.UnixNano, clamped for times it cannot represent (before
// 1678, after 2262): a saved time that far back is too old to count, and
// one that far ahead counts as it would have.
func unixNano(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return math.MinInt64 / 2
	case t.After(maxTime):
		return math.MaxInt64 / 2
	}
	return t.UnixNano()
}

var minTime, maxTime = time.Unix(0, math.MinInt64/2), time.Unix(0, math.MaxInt64/2)
