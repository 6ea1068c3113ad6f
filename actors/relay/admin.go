package relay

import (
	"context"
	"time"

	"github.com/udpfwd/udpfwd/internal/admin"
	"github.com/udpfwd/udpfwd/internal/config"
)

// adminListTimeout bounds AdminSessions when its context has no deadline.
const adminListTimeout = 2 * time.Second

// The admin listener sees a relay through admin.Relay: Name, Counters and
// AdminSessions; and a static forward through admin.ForwardReporter.
var (
	_ admin.Relay           = (*Relay)(nil)
	_ admin.ForwardReporter = (*Relay)(nil)
)

// AdminSessions lists the relay's live sessions for the admin listener's
// /sessions, asking the supervisor within ctx's deadline.
func (r *Relay) AdminSessions(ctx context.Context) ([]admin.Session, error) {
	timeout := adminListTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if r.Config().Mode == config.ModeForward {
		return nil, nil // a forward is no session: AdminForward reports it
	}
	l, err := r.Sessions(timeout)
	if err != nil {
		return nil, err
	}
	out := make([]admin.Session, len(l.Sessions))
	for i, s := range l.Sessions {
		out[i] = admin.Session{
			ID:            s.Session,
			Client:        s.Client,
			ClientAddr:    s.ClientAddr,
			UpstreamLocal: s.UpstreamLocal,
			Upstream:      s.Upstream,
			Stats:         s.Stats,
		}
	}
	return out, nil
}

// AdminForward reports a relay of static forward mode for /sessions: its
// listening socket, the last client it heard, its outbound socket and its
// counters. It returns nil for a relay of another mode.
func (r *Relay) AdminForward(ctx context.Context) (*admin.Forward, error) {
	if r.Config().Mode != config.ModeForward {
		return nil, nil
	}
	timeout := adminListTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l, err := r.Sessions(timeout)
	if err != nil {
		return nil, err
	}
	f := &admin.Forward{Rule: r.origin}
	if addrs := r.ListenAddrs(); len(addrs) > 0 {
		f.Listen = addrs[0]
	}
	if len(l.Sessions) == 0 {
		return f, nil // it failed: nothing forwards (Healthy says so)
	}
	s := l.Sessions[0]
	f.ClientAddr, f.UpstreamLocal, f.Upstream, f.Stats = s.Stats.ClientAddr, s.UpstreamLocal, s.Upstream, s.Stats
	return f, nil
}
