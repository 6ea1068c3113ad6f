package relay

import (
	"fmt"
	"net/netip"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/cluster"
	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/session"
	"github.com/udpfwd/udpfwd/actors/supervisor"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// WithCluster makes the relay a node of the cluster node's (the process
// starts the node, before any relay, and shares it between its relays): its
// sessions are registered in the cluster, datagrams of clients whose
// session lives on another node are forwarded there, and replies the other
// nodes send back through this one leave from its listening sockets. owner
// selects the owner reply mode (a forwarded client's replies leave from its
// session's node), else ingress. Forward relays ignore it.
func WithCluster(n *cluster.Node, owner bool) Option {
	return func(r *Relay) { r.cluster, r.clusterOwner = n, owner }
}

// WithListener opens the relay's listening groups with f instead of
// udpio.ListenGroup: for tests that run several nodes of a cluster in one
// process on one shared port (reuse_port), which hand the first node a
// group opened before it, so that the port is held from the moment it is
// chosen.
func WithListener(f func(netip.AddrPort, udpio.GroupConfig) (*udpio.Group, error)) Option {
	return func(r *Relay) { r.listenFunc = f }
}

// listen opens a listening group.
func (r *Relay) listen(ap netip.AddrPort, gc udpio.GroupConfig) (*udpio.Group, error) {
	if r.listenFunc != nil {
		return r.listenFunc(ap, gc)
	}
	return udpio.ListenGroup(ap, gc)
}

// clusterConfig is the supervisor's cluster part, with the actor that
// sends the replies other nodes return through this relay; nil without a
// cluster.
func (r *Relay) clusterConfig(slots []*slot) (*supervisor.Cluster, error) {
	if r.cluster == nil {
		return nil, nil
	}
	if len(slots) > session.RemoteListenerBase {
		return nil, fmt.Errorf("relay %q: a relay in a cluster listens on at most %d addresses, not %d", r.name, session.RemoteListenerBase, len(slots))
	}
	listens := make([]netip.AddrPort, len(slots))
	for i, sl := range slots {
		listens[i] = sl.addr
	}
	replier := r.system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &replier{r: r} }))
	r.replier = replier
	return &supervisor.Cluster{Node: r.cluster, Owner: r.clusterOwner, ReplyTo: replier, Listens: listens}, nil
}

// replier sends the replies other nodes return through this relay
// (ingress reply mode): each batch leaves by the writer of the listening
// socket on the address the client wrote to.
type replier struct{ r *Relay }

func (p *replier) Receive(ctx actor.Context) {
	m, ok := ctx.Message().(*cluster.RemoteReplies)
	if !ok {
		return
	}
	r := p.r
	r.mu.RLock()
	var w *actor.PID
	for i, sl := range r.slots {
		if sl != nil && sl.addr == m.Listen {
			// Any worker's writer will do: every socket of the group has
			// the address.
			w = sl.writers[0]
			m.Batch.Listener = uint8(i)
			break
		}
	}
	r.mu.RUnlock()
	if w == nil {
		r.counters.Drop(stats.NoPeer, len(m.Batch.Datagrams))
		r.log.Debug("cluster replies for a listening address this relay does not have", zap.Stringer("listen", m.Listen))
		m.Batch.Release()
		return
	}
	ctx.Send(w, (*messages.ClientReplies)(m.Batch))
}
