package stats

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Session holds one session's counters and times. The session actor writes
// them once per batch; the session API reads them from other goroutines.
type Session struct {
	created      time.Time
	lastClient   atomic.Int64 // unix nanoseconds
	lastUpstream atomic.Int64
	datagrams    [NumDirections]atomic.Uint64
	bytes        [NumDirections]atomic.Uint64

	mu         sync.Mutex
	clientAddr netip.AddrPort
	saved      []byte
}

// NewSession starts a session's record at now.
func NewSession(now time.Time, client netip.AddrPort) *Session {
	s := &Session{created: now, clientAddr: client}
	s.lastClient.Store(now.UnixNano())
	s.lastUpstream.Store(now.UnixNano())
	return s
}

// Move counts n datagrams of bytes in direction d, seen at now.
func (s *Session) Move(d Direction, n, bytes int, now time.Time) {
	s.datagrams[d].Add(uint64(n))
	s.bytes[d].Add(uint64(bytes))
	switch d {
	case FromClient:
		s.lastClient.Store(now.UnixNano())
	case FromUpstream:
		s.lastUpstream.Store(now.UnixNano())
	}
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
// which it updates when that changes; b must not be modified afterwards.
func (s *Session) SetSaved(b []byte) {
	s.mu.Lock()
	s.saved = b
	s.mu.Unlock()
}

// Saved returns what SetSaved recorded last.
func (s *Session) Saved() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saved
}

// SessionSnapshot is a session's record at one moment.
type SessionSnapshot struct {
	Created      time.Time
	LastClient   time.Time // the newest datagram from the client
	LastUpstream time.Time // the newest datagram from upstream (Created if none)
	ClientAddr   netip.AddrPort
	Datagrams    [NumDirections]uint64
	Bytes        [NumDirections]uint64
}

// Snapshot reads the record.
func (s *Session) Snapshot() SessionSnapshot {
	snap := SessionSnapshot{
		Created:      s.created,
		LastClient:   time.Unix(0, s.lastClient.Load()),
		LastUpstream: time.Unix(0, s.lastUpstream.Load()),
	}
	for d := range NumDirections {
		snap.Datagrams[d] = s.datagrams[d].Load()
		snap.Bytes[d] = s.bytes[d].Load()
	}
	s.mu.Lock()
	snap.ClientAddr = s.clientAddr
	s.mu.Unlock()
	return snap
}
