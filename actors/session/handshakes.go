package session

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/internal/metrics"
)

// What the session tells the relay's health record (Config.Status): the
// handshake initiations it forwards upstream, the responses it sends back
// to the client, the time between an initiation and the response that
// answers it, and, when it ends, how long it lived. Nothing here allocates.

// timedInitiations is how many forwarded initiations a session remembers
// until their responses. A client sends one every 5 s while a handshake
// does not complete; a few cover the retries that a slow upstream answers
// late, and an attacker's initiations under the client's ID only push the
// oldest out (losing one round-trip sample, nothing else).
const timedInitiations = 4

// handshakeClock remembers when the latest initiations were forwarded, by
// their sender index: the upstream's response carries that index as its
// receiver index. A fixed table, so that it never allocates; times are Unix
// nanoseconds (zero: free), 8 bytes where a time.Time takes 24, and indexes
// and times in arrays of their own, which pack without padding.
type handshakeClock struct {
	at    [timedInitiations]int64
	index [timedInitiations]uint32
	next  uint8
}

// forwarded records an initiation with sender index sent upstream at now.
// The same index again (the same initiation sent twice) keeps the newer
// time.
func (c *handshakeClock) forwarded(index uint32, now time.Time) {
	at := now.UnixNano()
	for i := range c.at {
		if c.at[i] != 0 && c.index[i] == index {
			c.at[i] = at
			return
		}
	}
	c.index[c.next], c.at[c.next] = index, at
	c.next = (c.next + 1) % timedInitiations
}

// answered returns the round trip of the initiation a response with
// receiver index answers, and forgets it; ok is false for a response to no
// initiation the session remembers.
func (c *handshakeClock) answered(receiver uint32, now time.Time) (rtt time.Duration, ok bool) {
	for i := range c.at {
		if c.at[i] != 0 && c.index[i] == receiver {
			// A wall clock stepped back between the two gives no sample
			// below zero.
			rtt, c.at[i] = time.Duration(max(now.UnixNano()-c.at[i], 0)), 0
			return rtt, true
		}
	}
	return 0, false
}

// countHandshakes adds n handshakes of result r to the relay's record.
func (s *Session) countHandshakes(r metrics.HandshakeResult, n int) {
	if n > 0 && s.cfg.Status != nil {
		s.cfg.Status.CountHandshakes(r, n)
	}
}

// has reports whether an initiation with sender index index is
// remembered, unanswered.
func (c *handshakeClock) has(index uint32) bool {
	for i := range c.at {
		if c.at[i] != 0 && c.index[i] == index {
			return true
		}
	}
	return false
}

// timeHandshake records the round trip of the initiation a response from
// upstream with receiver index answers, if the session forwarded it, and
// tells the endpoint's health (answered).
func (s *Session) timeHandshake(ctx actor.Context, receiver uint32, now time.Time) {
	rtt, ok := s.handshakes.answered(receiver, now)
	if !ok {
		return
	}
	if s.cfg.Status != nil {
		s.cfg.Status.ObserveHandshakeRTT(rtt)
	}
	s.answered(ctx, rtt)
}

// cookie sees a cookie reply from upstream with receiver index: one that
// answers an initiation the session forwarded shows the endpoint alive,
// only busy, without a round-trip sample.
func (s *Session) cookie(ctx actor.Context, receiver uint32) {
	if s.handshakes.has(receiver) {
		s.answered(ctx, 0)
	}
}

// ended records the session's lifetime, from its first opening (before a
// restart, for a restored session) to now. A forward is no session.
func (s *Session) ended(now time.Time) {
	if s.cfg.Forward || s.cfg.Status == nil {
		return
	}
	s.cfg.Status.ObserveSessionDuration(now.Sub(s.cfg.Stats.Snapshot().Created))
}
