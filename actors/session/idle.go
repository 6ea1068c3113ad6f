package session

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/messages"
)

// The idle clock is Stats' (stats.Session.LastHeard), so that the session
// expires by the same times the session API shows. A timer checks it: it
// fires when the older side could first be idle, and re-arms itself for the
// rest when traffic came meanwhile, so traffic costs the timer nothing.

// checkIdle is the one CheckIdle message every timer sends.
var checkIdle = &messages.CheckIdle{}

// startIdleTimer arms the first check, if the session can expire at all.
func (s *Session) startIdleTimer(ctx actor.Context) {
	if s.cfg.IdleTimeout <= 0 {
		return
	}
	root, self := ctx.ActorSystem().Root, ctx.Self()
	s.timer = time.AfterFunc(s.cfg.IdleTimeout, func() { root.Send(self, checkIdle) })
}

// checkIdle asks the supervisor, once, to end the session if one direction
// has been silent for the idle timeout; otherwise it re-arms the timer for
// when that could first be so.
func (s *Session) checkIdle(ctx actor.Context) {
	if s.idleSent || s.cfg.IdleTimeout <= 0 {
		return
	}
	now := time.Now()
	lastClient, lastUpstream := s.cfg.Stats.LastHeard()
	side, last := "client", lastClient
	if lastUpstream.Before(last) {
		side, last = "upstream", lastUpstream
	}
	if wait := last.Add(s.cfg.IdleTimeout).Sub(now); wait > 0 {
		s.timer.Reset(wait)
		return
	}
	s.idleSent = true
	ctx.Send(ctx.Parent(), &messages.SessionIdle{Session: s.info(), Side: side, Handle: s.cfg.Handle})
}
