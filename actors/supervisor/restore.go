package supervisor

import (
	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// restore re-opens saved sessions. Each is admitted again by its client's
// policy, as a new one would be (the policies may have changed since it was
// saved), and then re-opened on its old upstream port if it can still be
// bound, else on a new one (reported as Rebound).
func (s *Supervisor) restore(ctx actor.Context, saved []messages.RestoredSession) {
	if s.cfg.Mode != ModeWireGuard {
		return
	}
	for i := range saved {
		r := &saved[i]
		info := r.Info
		if _, taken := s.sessions[info.Client]; taken || info.Client.IsZero() || !info.Upstream.IsValid() {
			continue
		}
		if _, taken := s.pending[info.Client]; taken {
			continue
		}
		s.ask(ctx, info.Client, info.ClientAddr, &pending{restore: r})
	}
}

// reopen opens an admitted saved session on its old upstream port if it
// can, and publishes SessionRestored instead of SessionOpened.
func (s *Supervisor) reopen(ctx actor.Context, client wgproto.ClientID, p *pending, m *messages.SessionAdmitted) {
	r := p.restore
	info := r.Info
	conn, rebind, err := s.redial(info.UpstreamLocal, info.Upstream, r.Rebind)
	if err != nil {
		s.cfg.Logger.Warn("restore session: open upstream socket", zap.Stringer("client", client), zap.Error(err))
		s.dropAdmission(client, p, stats.UpstreamBindFailed, ctx.Stop)
		if m.Release != nil {
			m.Release()
		}
		return
	}
	delete(s.pending, client)
	ev := &messages.SessionRestored{Wanted: info.UpstreamLocal}
	if rebind != nil {
		ev.Rebound, ev.Err = true, rebind.Error()
	}
	s.spawn(ctx, newSession{
		client: client, from: info.ClientAddr, conn: conn, idle: s.cfg.IdleTimeout, policy: p.policy,
		release: m.Release, limits: m.Limits, id: info.Session, created: r.Created, roam: r.Roam, restore: ev,
	})
}
