package relay

import (
	"time"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Backoff exposes backoff to the tests.
var Backoff = backoff

// WorkerClients lists, for each worker, the client IDs of its sessions.
func (r *Relay) WorkerClients(timeout time.Duration) ([][]wgproto.ClientID, error) {
	out := make([][]wgproto.ClientID, len(r.workers))
	for i, w := range r.workers {
		res, err := r.system.Root.RequestFuture(w.supervisor, &messages.ListSessions{}, timeout).Result()
		if err != nil {
			return nil, err
		}
		for _, s := range res.(*messages.SessionList).Sessions {
			out[i] = append(out[i], s.Client)
		}
	}
	return out, nil
}
