package stats

import (
	"encoding/json"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Session holds one session's counters and its idle clock. The session
// actor writes them once per batch; the session API reads them from other
// goroutines.
//
// The counters count what the relay-wide Counters count, at the same point:
// FromClient and FromUpstream as the datagrams arrive, before any drop;
// ToUpstream and ToClient as the session hands them on to be sent, before
// the kernel's verdict (a datagram it refuses is also counted as dropped,
// relay-wide).
//
// The idle clock is the one the session expires by and the session API
// shows: LastClient moves only for datagrams from the client's confirmed
// address (anyone can send datagrams that carry its client ID, and those
// must not keep the session alive), LastUpstream for every datagram from
// upstream (the session's socket reads only the upstream's).
type Session struct {
	created      time.Time
	lastClient   atomic.Int64 // unix nanoseconds
	lastUpstream atomic.Int64
	datagrams    [NumDirections]atomic.Uint64
	bytes        [NumDirections]atomic.Uint64

	mu         sync.Mutex
	clientAddr netip.AddrPort
	saved      any // SetSaved's value, or it encoded (json.RawMessage) once asked for
}

// NewSession starts a session's record. created is when the session was
// first opened (a restored session keeps its own); the idle clock starts at
// started, when this run of the session began.
func NewSession(created, started time.Time, client netip.AddrPort) *Session {
	s := &Session{created: created, clientAddr: client}
	s.lastClient.Store(started.UnixNano())
	s.lastUpstream.Store(started.UnixNano())
	return s
}

// Move counts n datagrams of bytes in direction d.
func (s *Session) Move(d Direction, n, bytes int) {
	s.datagrams[d].Add(uint64(n))
	s.bytes[d].Add(uint64(bytes))
}

// HeardClient moves the idle clock's client side to now: a datagram came
// from the client's confirmed address.
func (s *Session) HeardClient(now time.Time) { s.lastClient.Store(now.UnixNano()) }

// HeardUpstream moves the idle clock's upstream side to now.
func (s *Session) HeardUpstream(now time.Time) { s.lastUpstream.Store(now.UnixNano()) }

// LastHeard reads the idle clock: when the session last heard from its
// client's confirmed address, and from upstream.
func (s *Session) LastHeard() (client, upstream time.Time) {
	return time.Unix(0, s.lastClient.Load()), time.Unix(0, s.lastUpstream.Load())
}

// SetClientAddr records where the session's replies now go.
func (s *Session) SetClientAddr(a netip.AddrPort) {
	s.mu.Lock()
	s.clientAddr = a
	s.mu.Unlock()
}

// ClientAddr returns where the session's replies go.
func (s *Session) ClientAddr() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clientAddr
}

// SetSaved records the session's state to persist (its roaming state),
// which it updates when that changes: a value that encoding/json encodes,
// not modified afterwards. It is encoded when Saved is first asked for it,
// by whoever lists the sessions, not by the session that sets it: a
// session sets it two or three times as it opens, and encoding it each
// time was a sizeable part of what opening a session cost.
func (s *Session) SetSaved(v any) {
	s.mu.Lock()
	s.saved = v
	s.mu.Unlock()
}

// Saved returns what SetSaved recorded last, encoded as JSON; nil if
// nothing was, or it does not encode.
func (s *Session) Saved() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch v := s.saved.(type) {
	case nil:
		return nil
	case json.RawMessage:
		return v
	}
	b, err := json.Marshal(s.saved)
	if err != nil {
		return nil
	}
	s.saved = json.RawMessage(b)
	return b
}

// SessionSnapshot is a session's record at one moment.
type SessionSnapshot struct {
	Created      time.Time
	LastClient   time.Time // the newest datagram from the client's confirmed address (the idle clock)
	LastUpstream time.Time // the newest datagram from upstream (the session's start if none)
	ClientAddr   netip.AddrPort
	Datagrams    [NumDirections]uint64
	Bytes        [NumDirections]uint64
}

// Snapshot reads the record.
func (s *Session) Snapshot() SessionSnapshot {
	snap := SessionSnapshot{Created: s.created}
	snap.LastClient, snap.LastUpstream = s.LastHeard()
	for d := range NumDirections {
		snap.Datagrams[d] = s.datagrams[d].Load()
		snap.Bytes[d] = s.bytes[d].Load()
	}
	s.mu.Lock()
	snap.ClientAddr = s.clientAddr
	s.mu.Unlock()
	return snap
}
