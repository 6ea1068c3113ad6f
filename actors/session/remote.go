package session

import (
	"net/netip"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/cluster"
	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// A clustered session (Config.Cluster) also takes its client's datagrams
// that reached another node of the cluster, forwarded to it as
// *cluster.RemoteDatagrams. They go through the same roaming rules as the
// datagrams of its own listeners: the client's real address and the way
// back, a "listener" index, are what roam sees. The way back is one of this
// node's listeners when the session's replies leave from here (owner
// reply mode, and a listener on the shared address the datagram arrived
// on), else the ingress node's replying actor, which gets a virtual
// listener index from RemoteListenerBase up: replies for it go back through
// that node (cluster.Node.Reply).

// RemoteListenerBase is the first listener index that names another node's
// way back to the client rather than a listener of this relay. A relay in a
// cluster listens on at most RemoteListenerBase addresses; a session knows
// at most maxIngress ingress nodes at once (the oldest is forgotten for a
// new one). Index 255 is never one: the state file's "no listener".
const RemoteListenerBase = 240

// maxIngress is how many other nodes' ways back a session keeps.
const maxIngress = 255 - RemoteListenerBase

// Cluster is what a clustered session needs.
type Cluster struct {
	Node *cluster.Node
	Key  cluster.Key
	// Owner is the owner reply mode: replies to a client whose datagram
	// arrived on another node leave from this node's listener on the same
	// shared address, if it has one.
	Owner bool
	// Listens are the relay's listening addresses by listener index, to
	// find the local listener of a shared address.
	Listens []netip.AddrPort
}

// ingressWay is another node's way back to the client: its replying actor
// and the shared listening address the client wrote to.
type ingressWay struct {
	replyTo *actor.PID
	listen  netip.AddrPort
}

// ingressWays are a session's ways back through other nodes, by virtual
// listener index from RemoteListenerBase; next is the one a new way
// replaces when they are all taken. A session allocates them with the
// first datagram another node forwards: most sessions never need them.
type ingressWays struct {
	ways []ingressWay
	next int
}

// fromRemote takes datagrams of the client that another node received.
func (s *Session) fromRemote(ctx actor.Context, m *cluster.RemoteDatagrams) {
	b := m.Batch
	listener, ok := s.wayBack(m)
	if !ok || s.cfg.Cluster == nil {
		s.cfg.Counters.Drop(stats.NoPeer, len(b.Datagrams))
		b.Release()
		return
	}
	b.Listener = listener
	s.fromClient(ctx, b)
}

// wayBack is the listener index replies to m's client go by.
func (s *Session) wayBack(m *cluster.RemoteDatagrams) (uint8, bool) {
	c := s.cfg.Cluster
	if c == nil {
		return 0, false
	}
	if c.Owner || m.ReplyTo == nil {
		for i, l := range c.Listens {
			if l == m.Listen && i < RemoteListenerBase && i < len(s.cfg.Writers) && s.cfg.Writers[i] != nil {
				return uint8(i), true
			}
		}
	}
	if m.ReplyTo == nil {
		return 0, false
	}
	if s.ingress == nil {
		s.ingress = new(ingressWays)
	}
	in := s.ingress
	for i, w := range in.ways {
		if w.listen == m.Listen && w.replyTo.Equal(m.ReplyTo) {
			return uint8(RemoteListenerBase + i), true
		}
	}
	w := ingressWay{replyTo: m.ReplyTo, listen: m.Listen}
	if len(in.ways) < maxIngress {
		in.ways = append(in.ways, w)
		return uint8(RemoteListenerBase + len(in.ways) - 1), true
	}
	i := in.next
	in.next = (in.next + 1) % len(in.ways)
	in.ways[i] = w
	return uint8(RemoteListenerBase + i), true
}

// canReply reports whether listener names a way back to the client.
func (s *Session) canReply(listener uint8) bool {
	if listener >= RemoteListenerBase {
		return s.cfg.Cluster != nil && s.ingress != nil && int(listener-RemoteListenerBase) < len(s.ingress.ways)
	}
	return int(listener) < len(s.cfg.Writers) && s.cfg.Writers[listener] != nil
}

// replyRemote sends replies back through the ingress node of out.Listener.
func (s *Session) replyRemote(out *udpio.Batch) {
	w := s.ingress.ways[out.Listener-RemoteListenerBase]
	s.cfg.Cluster.Node.Reply(w.replyTo, s.cfg.Cluster.Key, w.listen, out)
}

// weigh weighs a message for the session's bounded mailbox: forwarded
// datagrams as any batch.
func weigh(m any) int {
	if r, ok := m.(*cluster.RemoteDatagrams); ok {
		return r.Batch.Footprint()
	}
	return messages.Footprint(m)
}
