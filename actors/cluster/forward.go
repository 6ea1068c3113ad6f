package cluster

import (
	"net/netip"
	"sort"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/cluster/clusterpb"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// inboxName is the name of the actor on every node that receives datagram
// batches from other nodes.
const inboxName = "udpfwd-inbox"

// RemoteDatagrams is delivered to a session of this node: datagrams that
// another node received from the session's client. Whoever receives it owns
// Batch (pooled, as udpio documents) and must hand it on or Release it.
// Batch's datagram addresses are the client's source addresses; Batch.Listener is
// zero (the datagrams did not arrive on one of this node's sockets).
type RemoteDatagrams struct {
	Batch *udpio.Batch
	Key   Key
	// Listen is the shared listening address the datagrams arrived on, at
	// the ingress node.
	Listen netip.AddrPort
	// ReplyTo is the actor on the ingress node that sends replies from
	// Listen (the --cluster-reply ingress mode), nil if the ingress node
	// named none. Send replies there with Node.Reply.
	ReplyTo *actor.PID
}

// RemoteReplies is delivered to the actor a node named as ReplyTo: replies
// that the session's owner sends back through this (ingress) node, to be
// written from Listen to each datagram's address. The receiver owns Batch.
type RemoteReplies struct {
	Batch  *udpio.Batch
	Key    Key
	Listen netip.AddrPort
}

// IgnoreDeadLetterLogging keeps protoactor from logging a batch that
// reached a stopped actor.
func (*RemoteDatagrams) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging keeps protoactor from logging a batch that
// reached a stopped actor.
func (*RemoteReplies) IgnoreDeadLetterLogging() {}

// PeerStats counts one peer's share of the datagram path, as seen by the
// sending node. Datagrams are counted, not batches, except where named.
type PeerStats struct {
	Peer      string // the peer's cluster address
	Forwarded uint64 // datagrams sent to the peer
	Batches   uint64 // batch messages sent to the peer
	// DroppedFull counts datagrams dropped because the peer's queue was
	// full: the peer (or the network to it) is slower than the traffic.
	DroppedFull uint64
	// DroppedLeft counts datagrams that were queued when the peer left.
	DroppedLeft uint64
	// Unconfirmed counts datagrams sent but never acknowledged within the
	// acknowledgement timeout: probably lost with a broken connection.
	Unconfirmed uint64
	// InFlight is the number of batches sent and not yet acknowledged now
	// (at most linkWindow, 32).
	InFlight int
}

// Stats is a snapshot of the node's cluster state, for metrics.
type Stats struct {
	Members int
	Healthy bool
	Peers   []PeerStats // sorted by peer
	// Received counts datagrams that arrived from other nodes and were
	// handed to a local actor.
	Received uint64
	// DroppedGone counts datagrams that arrived for an actor that no longer
	// exists here (the sender then forgets its cached PID).
	DroppedGone uint64
	// DroppedMalformed counts datagrams in batches whose fields disagreed.
	DroppedMalformed uint64
	// Lookups counts lookups that asked the directory (the PID cache did
	// not have the session); LookupMisses those that found no session.
	Lookups, LookupMisses uint64
	// RegisterConflicts counts registrations of this node's sessions that
	// lost to another node's session of the same key.
	RegisterConflicts uint64
	// Rejoins counts the times this node rejoined with a new member ID
	// because its peers no longer counted it (static peers).
	Rejoins uint64
}

// Stats returns the current counters.
func (n *Node) Stats() Stats {
	s := Stats{
		Members:           int(n.members.Load()),
		Healthy:           n.Health() == nil,
		Received:          n.received.Load(),
		DroppedGone:       n.droppedGone.Load(),
		DroppedMalformed:  n.droppedMalformed.Load(),
		Lookups:           n.lookups.Load(),
		LookupMisses:      n.lookupMisses.Load(),
		RegisterConflicts: n.lookup.conflicts.Load(),
	}
	if n.static != nil {
		s.Rejoins = n.static.rejoins.Load()
	}
	n.linksMu.Lock()
	for peer, l := range n.links {
		s.Peers = append(s.Peers, l.stats.snapshot(peer))
	}
	n.linksMu.Unlock()
	sort.Slice(s.Peers, func(i, j int) bool { return s.Peers[i].Peer < s.Peers[j].Peer })
	return s
}

// Forward sends b, datagrams of the client of key that this node received
// on its listening address listen, to the client's session to, as one
// message: over remote to another node, or straight to an actor of this
// one. It takes ownership of b (at most udpio.MaxBatch
// datagrams) whatever happens. replyTo, if not nil, is the actor of this
// node that sends replies from listen (ingress reply mode). When the peer's
// queue is full the datagrams are dropped and counted. It does not block.
func (n *Node) Forward(to *actor.PID, key Key, listen netip.AddrPort, replyTo *actor.PID, b *udpio.Batch) {
	if to.Address == n.self {
		n.system.Root.Send(to, &RemoteDatagrams{Batch: b, Key: key, Listen: listen, ReplyTo: replyTo})
		return
	}
	o := &outgoing{target: to.Id, key: key, listen: listen, batch: b}
	if replyTo != nil {
		o.replyTo = replyTo.Id
	}
	n.linkTo(to.Address).send(n.system, o)
}

// Reply sends b, replies for the client of key, back through the ingress
// node whose actor to sends them from listen (a RemoteDatagrams' ReplyTo and
// Listen). It takes ownership of b and does not block.
func (n *Node) Reply(to *actor.PID, key Key, listen netip.AddrPort, b *udpio.Batch) {
	if to.Address == n.self {
		n.system.Root.Send(to, &RemoteReplies{Batch: b, Key: key, Listen: listen})
		return
	}
	n.linkTo(to.Address).send(n.system, &outgoing{target: to.Id, key: key, listen: listen, batch: b, reply: true})
}

// coalesce moves what m carries into the newest queued batch of the same
// stream (target, client, listening address, way back), as far as it has
// room, so that a queue of small batches (one per client and read batch,
// under load) holds more datagrams before it drops any; the datagrams of a
// stream keep their order. It reports whether m is now empty.
func (l *linkActor) coalesce(m *outgoing) bool {
	for i := l.count - 1; i >= 0; i-- {
		q := l.queue[(l.head+i)%linkQueue]
		if q.target == m.target && q.key == m.key && q.listen == m.listen && q.replyTo == m.replyTo && q.reply == m.reply {
			q.batch.Take(m.batch)
			break
		}
	}
	return len(m.batch.Datagrams) == 0
}

// outgoing is a batch on its way to a peer, not yet encoded.
type outgoing struct {
	target  string
	key     Key
	listen  netip.AddrPort
	replyTo string
	reply   bool
	batch   *udpio.Batch
}

// link is the sending side of the datagram path to one peer: an actor
// that keeps at most linkWindow batches unacknowledged and linkQueue more
// waiting.
type link struct {
	pid   *actor.PID
	stats *linkStats
}

// linkStats are a link's counters, written by its actor and read by Stats.
type linkStats struct {
	forwarded, batches, droppedFull, droppedLeft, unconfirmed atomic.Uint64
	inFlight                                                  atomic.Int64
}

func (s *linkStats) snapshot(peer string) PeerStats {
	return PeerStats{
		Peer:        peer,
		Forwarded:   s.forwarded.Load(),
		Batches:     s.batches.Load(),
		DroppedFull: s.droppedFull.Load(),
		DroppedLeft: s.droppedLeft.Load(),
		Unconfirmed: s.unconfirmed.Load(),
		InFlight:    int(s.inFlight.Load()),
	}
}

func (l *link) send(system *actor.ActorSystem, o *outgoing) { system.Root.Send(l.pid, o) }

// linkTo returns the link to peer, starting it on first use.
func (n *Node) linkTo(peer string) *link {
	n.linksMu.Lock()
	defer n.linksMu.Unlock()
	if l := n.links[peer]; l != nil {
		return l
	}
	l := &link{stats: &linkStats{}}
	inboxPID := actor.NewPID(peer, inboxName)
	l.pid = n.system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return &linkActor{n: n, peer: peer, inbox: inboxPID, stats: l.stats}
	}))
	n.links[peer] = l
	return l
}

// dropLink stops the link to a peer that left; what it queued is dropped
// and counted. Its counters go with it.
func (n *Node) dropLink(peer string) {
	n.linksMu.Lock()
	l := n.links[peer]
	delete(n.links, peer)
	n.linksMu.Unlock()
	if l != nil {
		n.system.Root.Stop(l.pid)
	}
}

// checkStall is the link's own timer message: look for a stalled window.
type checkStall struct{}

// linkActor runs a link on its mailbox goroutine.
type linkActor struct {
	n     *Node
	peer  string
	inbox *actor.PID
	stats *linkStats

	sent, acked uint64
	inflight    [linkWindow]int // datagrams of batch seq, at seq % linkWindow
	progress    time.Time       // last acknowledgement, or first send into an empty window
	timer       bool

	queue       [linkQueue]*outgoing
	head, count int
}

// Receive handles outgoing batches, acknowledgements and Gone notices.
func (l *linkActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *outgoing:
		l.stalled()
		if l.count == 0 && l.sent-l.acked < linkWindow {
			l.transmit(ctx, m)
			return
		}
		if l.coalesce(m) {
			m.batch.Release()
			return
		}
		if l.count == linkQueue {
			l.stats.droppedFull.Add(uint64(len(m.batch.Datagrams)))
			m.batch.Release()
			return
		}
		l.queue[(l.head+l.count)%linkQueue] = m
		l.count++
		l.arm(ctx)
	case *clusterpb.Ack:
		if m.Seq > l.acked && m.Seq <= l.sent {
			l.acked = m.Seq
			l.progress = time.Now()
			l.stats.inFlight.Store(int64(l.sent - l.acked))
		}
		l.drain(ctx)
	case *checkStall:
		l.timer = false
		l.stalled()
		l.drain(ctx)
		if l.count > 0 {
			l.arm(ctx)
		}
	case *clusterpb.Gone:
		pid := actor.NewPID(l.peer, m.Target)
		l.n.c.PidCache.RemoveByValue(Key{Relay: m.Relay, Client: clientOf(m.Client)}.String(), SessionKind, pid)
		l.n.epoch.Add(1)
	case *actor.Stopping:
		for l.count > 0 {
			o := l.queue[l.head]
			l.queue[l.head] = nil
			l.head = (l.head + 1) % linkQueue
			l.count--
			l.stats.droppedLeft.Add(uint64(len(o.batch.Datagrams)))
			o.batch.Release()
		}
	}
}

// drain sends queued batches while the window has room.
func (l *linkActor) drain(ctx actor.Context) {
	for l.count > 0 && l.sent-l.acked < linkWindow {
		o := l.queue[l.head]
		l.queue[l.head] = nil
		l.head = (l.head + 1) % linkQueue
		l.count--
		l.transmit(ctx, o)
	}
}

// stalled gives up on a full window that has had no acknowledgement for
// ackTimeout: its batches are counted as unconfirmed and the window reopens.
func (l *linkActor) stalled() {
	if l.sent-l.acked < linkWindow || time.Since(l.progress) < ackTimeout {
		return
	}
	for s := l.acked + 1; s <= l.sent; s++ {
		l.stats.unconfirmed.Add(uint64(l.inflight[s%linkWindow]))
	}
	l.acked = l.sent
	l.stats.inFlight.Store(0)
}

// arm schedules a stall check while batches wait.
func (l *linkActor) arm(ctx actor.Context) {
	if l.timer {
		return
	}
	l.timer = true
	self, system := ctx.Self(), ctx.ActorSystem()
	time.AfterFunc(ackTimeout, func() { system.Root.Send(self, &checkStall{}) })
}

// transmit encodes o, sends it to the peer's inbox with this link as the
// sender (for acknowledgements) and releases o's batch.
func (l *linkActor) transmit(ctx actor.Context, o *outgoing) {
	if l.sent == l.acked {
		l.progress = time.Now()
	}
	l.sent++
	m := &clusterpb.Batch{Seq: l.sent, Target: o.target, Client: o.key.Client[:], Relay: o.key.Relay, ReplyTo: o.replyTo, Reply: o.reply}
	m.Listen = make([]byte, addrSize)
	putAddr(m.Listen, o.listen)
	count := encodeBatch(m, o.batch)
	o.batch.Release()
	l.inflight[l.sent%linkWindow] = count
	l.stats.forwarded.Add(uint64(count))
	l.stats.batches.Add(1)
	l.stats.inFlight.Store(int64(l.sent - l.acked))
	ctx.Request(l.inbox, m)
}

// inbox is the actor on every node that receives Batch messages from other
// nodes' links, acknowledges them and hands the datagrams, decoded into
// pooled batches, to their local target. It runs on its mailbox goroutine;
// remote decodes the protobuf on its connection's goroutine before.
type inbox struct{ n *Node }

// Receive handles Batch messages.
func (in *inbox) Receive(ctx actor.Context) {
	m, ok := ctx.Message().(*clusterpb.Batch)
	if !ok {
		return
	}
	sender := ctx.Sender()
	if sender != nil && m.Seq%ackEvery == 0 {
		ctx.Send(sender, &clusterpb.Ack{Seq: m.Seq})
	}
	count := uint64(len(m.Lens) / lenSize)
	if _, ok := in.n.system.ProcessRegistry.GetLocal(m.Target); !ok {
		in.n.droppedGone.Add(count)
		if sender != nil {
			ctx.Send(sender, &clusterpb.Gone{Client: m.Client, Target: m.Target, Relay: m.Relay})
		}
		return
	}
	b, err := decodeBatch(m)
	if err != nil {
		in.n.droppedMalformed.Add(count)
		return
	}
	in.n.received.Add(uint64(len(b.Datagrams)))
	target := actor.NewPID(in.n.self, m.Target)
	key := Key{Relay: m.Relay, Client: clientOf(m.Client)}
	if m.Reply {
		ctx.Send(target, &RemoteReplies{Batch: b, Key: key, Listen: listenOf(m.Listen)})
		return
	}
	var replyTo *actor.PID
	if m.ReplyTo != "" && sender != nil {
		replyTo = actor.NewPID(sender.Address, m.ReplyTo)
	}
	ctx.Send(target, &RemoteDatagrams{Batch: b, Key: key, Listen: listenOf(m.Listen), ReplyTo: replyTo})
}
