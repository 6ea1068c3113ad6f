package session

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// Leaving an upstream endpoint that stopped answering. The session sees its
// client's handshake initiations go upstream and the endpoint's answers
// come back; it tells the supervisor of each (EndpointHandshake), which
// keeps every endpoint's health. When Config.Failover initiations in a row
// went unanswered, the session holds the newest one and asks to move
// (MoveSession). The supervisor either hands it a socket on another
// endpoint (SwapUpstream): the session closes its old socket, reads the new
// one and sends the held initiation there at once; or tells it to stay
// (StayOnEndpoint): the initiation goes by the old socket, and the session
// asks again at the next one.

// minRetry is how long after the previous initiation one still unanswered
// counts as the client's retry. WireGuard sends a new initiation at most
// every 5 s (RekeyTimeout), plus up to a third of a second of jitter; 4 s
// leaves a second for the datagrams' delays, and keeps whoever sends
// initiations under the client's ID faster than WireGuard does from
// counting more than one every 4 s.
const minRetry = 4 * time.Second

// streak is the client's unanswered initiations.
type streak struct {
	open       bool      // an initiation from the confirmed address waits for an answer
	last       time.Time // when the streak's latest counted initiation was seen
	unanswered int       // initiations retried unanswered, in a row
	// held is the initiation that waits while a MoveSession is out.
	held *udpio.Batch
}

// initiation sees a handshake initiation from the client on its way
// upstream, and reports whether the session holds it because it asked to
// move: the caller then leaves it to the session. Only initiations from
// the confirmed address count: anyone who knows the client ID can send one
// from elsewhere.
func (s *Session) initiation(ctx actor.Context, now time.Time, d *udpio.Datagram, listener uint8, confirmed bool) (held bool) {
	st := &s.streak
	switch {
	case s.cfg.Forward || !confirmed:
		return false
	case !st.open:
		st.open, st.last = true, now
		return false
	case now.Sub(st.last) < minRetry:
		return false // too soon to be the client's retry
	}
	st.last = now
	st.unanswered++
	s.report(ctx, false, 0)
	if s.cfg.Failover <= 0 || st.unanswered < s.cfg.Failover || st.held != nil {
		return false
	}
	st.held = udpio.GetBatch()
	st.held.Listener = listener
	st.held.Add(*d)
	s.cfg.Logger.Debug("endpoint does not answer: asking to move", zap.String("endpoint", s.cfg.Info.Endpoint),
		zap.Int("unanswered", st.unanswered))
	ctx.Send(ctx.Parent(), &messages.MoveSession{Session: s.info(), Handle: s.cfg.Handle, Unanswered: st.unanswered})
	return true
}

// answered ends the streak: the endpoint answered an initiation (rtt after
// it was forwarded; 0 for a cookie reply).
func (s *Session) answered(ctx actor.Context, rtt time.Duration) {
	s.streak.open, s.streak.unanswered = false, 0
	s.report(ctx, true, rtt)
}

// report tells the supervisor how a handshake with the session's endpoint
// went.
func (s *Session) report(ctx actor.Context, answered bool, rtt time.Duration) {
	if s.cfg.Forward {
		return
	}
	ctx.Send(ctx.Parent(), &messages.EndpointHandshake{Endpoint: s.cfg.Info.Endpoint, Answered: answered, RTT: rtt})
}

// swapUpstream moves the session to the socket the supervisor dialled on
// another endpoint: what was staged leaves by the old socket, which is then
// closed (ending its reader); the new one is read, and the held initiation
// goes out on it at once. The client, which was retrying its handshake,
// completes it with the new endpoint.
func (s *Session) swapUpstream(ctx actor.Context, m *messages.SwapUpstream) {
	c := m.Take()
	if c == nil {
		return
	}
	s.flush()
	old := s.cfg.Conn
	s.cfg.Conn = c
	s.cfg.Info.Endpoint, s.cfg.Info.Upstream, s.cfg.Info.UpstreamLocal = m.Endpoint, c.RemoteAddr(), c.LocalAddr()
	s.stopReading(old)
	s.startReading(ctx, c) // the supervisor published SessionMoved, which the relay logs
	s.streak = streak{held: s.streak.held}
	s.sendHeld(time.Now())
}

// stay sends the held initiation by the session's own socket: there was
// nowhere better to go. The streak goes on, and the next unanswered
// initiation asks again.
func (s *Session) stay() {
	s.sendHeld(s.streak.last)
}

// sendHeld writes the held initiation upstream now, by the current
// socket, and starts the streak from it.
func (s *Session) sendHeld(at time.Time) {
	b := s.streak.held
	if b == nil {
		return
	}
	s.streak.held = nil
	s.streak.open, s.streak.last = true, at
	s.flush()
	s.stage = b
	s.flush()
}

// dropHeld counts and releases an initiation still held when the session
// stops.
func (s *Session) dropHeld() {
	if b := s.streak.held; b != nil {
		s.streak.held = nil
		s.cfg.Counters.Drop(stats.SessionGone, len(b.Datagrams))
		b.Release()
	}
}
