package session

import (
	"time"

	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/limits"
)

// A reload's settings, applied to the live session in its own turn: the
// upstream socket stays open, so the upstream keeps seeing the same
// 4-tuple.

// clientLimits hold a client to its rate limit, each direction apart. A
// session has them only while its client is limited: most are not, and
// two limiters take 176 bytes.
type clientLimits struct {
	up, down limits.Limiter
}

// applyLimits holds the client to a new rate limit, each direction apart
// (an unlimited one lets the limiters go).
func (s *Session) applyLimits(l limits.Limits, now time.Time) {
	if l.Unlimited() {
		s.limits = nil
		return
	}
	if s.limits == nil {
		s.limits = new(clientLimits)
	}
	s.limits.up.Set(l, now)
	s.limits.down.Set(l, now)
}

// applySettings takes what of a reload concerns the session: the writers
// by listening socket (an index whose socket was removed has none, and its
// replies are dropped as no_peer until the client is heard on another),
// the upstream socket's buffers and GSO switch (set here, in the session's
// turn, as GSO is the writing goroutine's), the client's rate limit, and
// the idle timeout, against which the idle clock is checked at once: a
// session already idle for longer than a shortened timeout ends now.
func (s *Session) applySettings(m *messages.ApplySettings) {
	if m.Writers != nil {
		s.cfg.Writers = m.Writers
	}
	if m.Socket != nil {
		if err := s.cfg.Conn.SetBuffers(m.Socket.ReadBuffer, m.Socket.WriteBuffer); err != nil {
			s.logger().Warn("reload: set the upstream socket's buffers", zap.Error(err))
		}
		s.cfg.Conn.SetGSO(!m.Socket.NoGSO)
	}
	if m.Limits != nil {
		s.applyLimits(m.Limits.Limits(), time.Now())
	}
	if m.FailoverAfter > 0 {
		s.cfg.Failover = m.FailoverAfter
	}
	if m.Endpoint != "" {
		s.cfg.Info.Endpoint = m.Endpoint
	}
	if m.IdleTimeout > 0 && m.IdleTimeout != s.cfg.IdleTimeout && s.cfg.IdleTimeout > 0 {
		s.cfg.IdleTimeout = m.IdleTimeout
		if s.timer != nil && !s.idleSent {
			s.timer.Reset(0) // CheckIdle against the new timeout, now
		}
	}
}
