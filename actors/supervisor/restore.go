package supervisor

import (
	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/stats"
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
		k := idKey(info.Client)
		if _, taken := s.sessions[k]; taken || info.Client.IsZero() || !info.Upstream.IsValid() {
			continue
		}
		if _, taken := s.pending[k]; taken {
			continue
		}
		s.ask(ctx, k, info.Client, info.ClientAddr, &pending{restore: r})
	}
}

// reopen opens an admitted saved session on its old upstream port if it
// can, and publishes SessionRestored instead of SessionOpened.
func (s *Supervisor) reopen(ctx actor.Context, k key, p *pending) {
	r := p.restore
	info := r.Info
	client := info.Client
	conn, rebind, err := s.redial(info.UpstreamLocal, info.Upstream, r.Rebind)
	if err != nil {
		s.cfg.Logger.Warn("restore session: open upstream socket", zap.Stringer("client", client), zap.Error(err))
		s.dropAdmission(k, p, stats.UpstreamBindFailed, ctx.Stop)
		return
	}
	delete(s.pending, k)
	ev := &messages.SessionRestored{Wanted: info.UpstreamLocal}
	if rebind != nil {
		ev.Rebound, ev.Err = true, rebind.Error()
	}
	s.spawn(ctx, newSession{
		key: k, client: client, from: info.ClientAddr, conn: conn, idle: s.cfg.IdleTimeout, policy: p.policy,
		id: info.Session, created: r.Created, roam: r.Roam, restore: ev, endpoint: s.restoredEndpoint(info),
	})
}

// restoredEndpoint is the endpoint a saved session was on: the one of its
// saved name, else the one whose address it was connected to, else the
// first (a state file from before pools, or a relay reconfigured since).
func (s *Supervisor) restoredEndpoint(info messages.SessionInfo) int {
	if i := s.pool.Index(info.Endpoint); i >= 0 {
		return i
	}
	for i, a := range s.addrs {
		if a.IsValid() && a == info.Upstream {
			return i
		}
	}
	return 0
}
