package relay

import (
	"context"
	"time"

	"github.com/udpfwd/udpfwd/internal/admin"
)

// adminListTimeout bounds AdminSessions when its context has no deadline.
const adminListTimeout = 2 * time.Second

// The admin listener sees a relay through admin.Relay: Name, Counters and
// AdminSessions.
var _ admin.Relay = (*Relay)(nil)

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
