package supervisor

import (
	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/pool"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// reconfigure applies a reload's settings in place. What admits and opens
// new sessions (the policy chain, mac1, the upstream, where upstream
// sockets bind, the idle timeout and socket options they start with) is
// replaced for the next admission; every live session is either told what
// concerns it (ApplySettings) or, if the new settings refuse it, ended as
// closed. Admissions already waiting for their policy's answer finish under
// the policy that was asked. It answers Reconfigured.
func (s *Supervisor) reconfigure(ctx actor.Context, m *messages.Reconfigure) {
	if s.cfg.Mode == ModeWireGuard && m.IdleTimeout > 0 {
		s.cfg.IdleTimeout = m.IdleTimeout
	}
	s.cfg.UpstreamBind, s.cfg.UpstreamPorts = m.UpstreamBind, m.UpstreamPorts
	if m.Socket != nil {
		s.cfg.SocketOptions = udpio.Options{ReadBuffer: m.Socket.ReadBuffer, WriteBuffer: m.Socket.WriteBuffer, NoGSO: m.Socket.NoGSO}
	}
	if m.Policy != nil {
		s.cfg.Policy = m.Policy
	}
	s.cfg.MAC1, s.mac1 = m.MAC1, nil
	if m.MAC1 != nil {
		s.mac1 = wgproto.NewMAC1Checker(*m.MAC1)
	}
	if m.Writers != nil {
		s.cfg.Writers = m.Writers
	}
	eps := m.Endpoints
	if m.UpstreamChanged {
		if len(eps) == 0 {
			eps = []messages.Endpoint{{Name: endpointName(m.Upstream), Addr: m.Upstream}}
		}
		s.setEndpoints(eps)
	}
	if m.Clients != nil {
		s.cfg.Clients = *m.Clients
	}

	apply := &messages.ApplySettings{Writers: m.Writers, Socket: m.Socket, Limits: m.Limits}
	if s.cfg.Mode == ModeWireGuard {
		apply.IdleTimeout = s.cfg.IdleTimeout
	}
	if m.FailoverAfter > 0 && m.FailoverAfter != s.cfg.FailoverAfter {
		s.cfg.FailoverAfter = m.FailoverAfter
		s.pool.SetConfig(pool.Config{FailAfter: m.FailoverAfter})
		apply.FailoverAfter = m.FailoverAfter
	}
	// Poison, as for an expired session: what is already queued for it is
	// forwarded before it stops.
	how := ending{stopSession: ctx.Poison, stopPolicy: ctx.Stop, events: ctx.ActorSystem().EventStream}
	ended := 0
	for _, e := range s.sessions {
		why := s.refuses(m, e)
		endpoint := e.info.Endpoint
		if why == "" && m.UpstreamChanged && !e.forward {
			var ok bool
			if endpoint, ok = s.keepEndpoint(e, eps); !ok {
				why = "its upstream endpoint " + e.info.Endpoint + " is not configured any more"
			}
		}
		if why != "" {
			s.cfg.Logger.Info("reload: session ended", append([]zap.Field{zap.Stringer("session", e.info.Session)},
				append(clientFields(e.info.Client), zap.String("reason", why))...)...)
			if s.end(how, e, stats.SessionClosed, closed) {
				ended++
			}
			continue
		}
		if endpoint != e.info.Endpoint {
			// Its endpoint was renamed by the reload (a name became the
			// literal address it is connected to): counted under the new one.
			e.info.Endpoint = endpoint
			s.pool.AddSessions(s.pool.Index(endpoint), 1)
			own := *apply
			own.Endpoint = endpoint
			ctx.Send(e.pid, &own)
			continue
		}
		ctx.Send(e.pid, apply)
	}
	s.publishEndpoints()
	ctx.Respond(&messages.Reconfigured{Ended: ended})
}

// refuses says why the new allow-lists end a live session, refusing its
// client at its current address, or "". (A session whose upstream endpoint
// left the pool ends too: see reconfigure.)
func (s *Supervisor) refuses(m *messages.Reconfigure, e *entry) string {
	if e.forward {
		return "" // the relay restarts a forward whose upstream changed
	}
	if e.plain != nil && !s.cfg.Clients.TrackZeroID {
		return "plain clients are not tracked any more (zero_id: drop)"
	}
	if m.Refuse != nil {
		if reason := m.Refuse(e.info.Client, e.stats.ClientAddr().Addr()); reason != "" {
			return reason
		}
	}
	return ""
}
