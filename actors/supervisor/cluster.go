package supervisor

import (
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/cluster"
	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/session"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// A supervisor in a cluster (Config.Cluster): sessions stay on the node
// that admitted their client. Every session it opens for a client ID is
// registered in the cluster's directory, and unregistered when it ends.
// A datagram whose client ID has no session here is looked up (once, on an
// unknown ID's first datagrams: held while the lookup runs off the
// supervisor's goroutine) and, if another node has the session, forwarded
// to it with the rest of the read batch's datagrams of that client, in one
// message. An ID no node has is remembered for missTTL, so that junk IDs
// cost one lookup each per missTTL at most, and its initiation is admitted
// here. Plain clients (zero ID, tracked by index) are not shared: a plain
// client that moves to another node gets a new session there.

const (
	// maxLookups bounds the lookups in flight (each holds its first
	// datagrams); an unknown ID's datagram beyond it is dropped, as
	// unknown_client (or admission_overload for an initiation).
	maxLookups = 256
	// lookupHold bounds the datagrams held for one lookup (a client's
	// first datagrams at a new node: a read batch), and maxHeld those held
	// for all lookups together (2 MiB of buffers). Beyond them datagrams
	// are dropped as unknown_client while the lookup runs (about 200 µs).
	lookupHold = udpio.MaxBatch
	maxHeld    = 1024
	// missTTL is how long an ID that no node has is known to be nobody's:
	// its initiation is admitted here without asking, its other datagrams
	// are dropped without asking. A session another node opens meanwhile
	// is found after it (a client that roams here within a second of its
	// first handshake elsewhere waits that long).
	missTTL = time.Second
	// maxMisses bounds the IDs remembered as nobody's; past it the memory
	// is emptied (an ID costs a lookup again).
	maxMisses = 4096
	// maxRemotes bounds the other nodes' sessions remembered: an entry
	// leaves when its node or session is known gone, but a session that
	// ends quietly on its node is forgotten here only when a datagram
	// finds it gone. Past the bound the table is emptied (each roamed
	// client costs one lookup again).
	maxRemotes = 1 << 16
)

// Cluster is what a supervisor needs to be a cluster node's.
type Cluster struct {
	Node *cluster.Node
	// Owner is the owner reply mode (see session.Cluster); otherwise
	// replies go back through the node that received the client's latest
	// datagram.
	Owner bool
	// ReplyTo is this relay's actor that sends replies other nodes return
	// through it (cluster.RemoteReplies), from the listening address they
	// name.
	ReplyTo *actor.PID
	// Listens are the relay's listening addresses by listener index.
	Listens []netip.AddrPort
}

// remote is a session of another node that this supervisor forwards to.
type remote struct {
	id  wgproto.ClientID
	pid *actor.PID
	out *udpio.Batch // datagrams being forwarded to it in this batch
}

// lookup is a lookup in flight, with the datagrams it holds.
type lookup struct {
	held     *udpio.Batch
	listener uint8
}

// clusterState is the supervisor's cluster tables. They are nil when the
// supervisor is not a cluster's.
type clusterState struct {
	remotes  map[wgproto.ClientID]*remote
	epoch    uint64 // the node's epoch when remotes were last checked
	lookups  map[wgproto.ClientID]*lookup
	misses   map[wgproto.ClientID]time.Time
	forwards []*remote // remotes that have datagrams in this batch
	held     int       // datagrams the lookups hold
}

func newClusterState() clusterState {
	return clusterState{
		remotes: map[wgproto.ClientID]*remote{},
		lookups: map[wgproto.ClientID]*lookup{},
		misses:  map[wgproto.ClientID]time.Time{},
	}
}

// clusterKey is the cluster's name of client id's session of this relay.
func (s *Supervisor) clusterKey(id wgproto.ClientID) cluster.Key {
	return cluster.Key{Relay: s.cfg.Relay, Client: id}
}

// checkRemotes forgets the remote sessions the node no longer vouches for
// (their node left, or they ended), when its epoch says something may have
// changed: an atomic load per batch otherwise.
func (s *Supervisor) checkRemotes() {
	n := s.cfg.Cluster.Node
	epoch := n.Epoch()
	if epoch == s.cl.epoch {
		return
	}
	s.cl.epoch = epoch
	for id, r := range s.cl.remotes {
		if pid := n.Cached(s.clusterKey(id)); pid == nil || !pid.Equal(r.pid) {
			delete(s.cl.remotes, id)
		}
	}
}

// elsewhere places a datagram of client ID id that has no session here: to
// the session of another node (it returns true and has taken d), or held
// for a lookup (true), or not at all (false: an initiation of an ID no node
// has, which the caller admits, or anything else, dropped here and true).
func (s *Supervisor) elsewhere(h wgproto.Header, d *udpio.Datagram, listener uint8) bool {
	if r := s.cl.remotes[h.Client]; r != nil {
		if r.out == nil {
			r.out = udpio.GetBatch()
			s.cl.forwards = append(s.cl.forwards, r)
		}
		r.out.Add(*d)
		d.Buf = nil
		if r.out.Full() {
			s.forward(h.Client, r, listener)
		}
		return true
	}
	if l := s.cl.lookups[h.Client]; l != nil {
		if len(l.held.Datagrams) < lookupHold && s.cl.held < maxHeld {
			l.held.Add(*d)
			d.Buf = nil
			s.cl.held++
		} else {
			s.drops[stats.UnknownClient]++
		}
		return true
	}
	initiation := h.Type == wgproto.TypeInitiation
	if t, ok := s.cl.misses[h.Client]; ok && s.clock().Sub(t) < missTTL {
		if initiation {
			return false
		}
		s.drops[stats.UnknownClient]++
		return true
	}
	if len(s.cl.lookups) >= maxLookups || s.cl.held >= maxHeld {
		if initiation {
			s.drops[stats.AdmissionOverload]++
		} else {
			s.drops[stats.UnknownClient]++
		}
		return true
	}
	l := &lookup{held: udpio.GetBatch(), listener: listener}
	l.held.Add(*d)
	d.Buf = nil
	s.cl.held++
	s.cl.lookups[h.Client] = l
	s.cfg.Cluster.Node.LookupAsync(s.clusterKey(h.Client), s.self)
	return true
}

// forward sends what r gathered to its session.
func (s *Supervisor) forward(id wgproto.ClientID, r *remote, listener uint8) {
	c := s.cfg.Cluster
	var listen netip.AddrPort
	if int(listener) < len(c.Listens) {
		listen = c.Listens[listener]
	}
	out := r.out
	r.out = nil
	c.Node.Forward(r.pid, s.clusterKey(id), listen, c.ReplyTo, out)
}

// flushForwards sends every remote session the datagrams the batch had for
// it.
func (s *Supervisor) flushForwards(listener uint8) {
	for _, r := range s.cl.forwards {
		if r.out != nil {
			s.forward(r.id, r, listener)
		}
	}
	clear(s.cl.forwards)
	s.cl.forwards = s.cl.forwards[:0]
}

// located handles a lookup's answer: the held datagrams go to the session
// found, or, if there is none, the first initiation among them asks to open
// one here and the rest are dropped.
func (s *Supervisor) located(ctx actor.Context, m *cluster.Located) {
	id := m.Key.Client
	l := s.cl.lookups[id]
	if l == nil {
		return
	}
	delete(s.cl.lookups, id)
	held := l.held
	s.cl.held -= len(held.Datagrams)
	if ce := s.cfg.Logger.Check(zap.DebugLevel, "cluster lookup"); ce != nil {
		ce.Write(clientField(id), zap.Stringer("found", m.PID), zap.Int("held", len(held.Datagrams)))
	}
	s.batchNow = time.Time{}
	switch {
	case s.sessions[idKey(id)] != nil: // opened here meanwhile
		e := s.sessions[idKey(id)]
		held.Listener = l.listener
		ctx.Send(e.pid, (*messages.ClientDatagrams)(held))
		return
	case m.PID != nil && m.PID.Address == s.cfg.Cluster.Node.Address():
		// This node's own session, which routing does not know: one this
		// supervisor lost (it ended), or another relay's. Treat it as none.
	case m.PID != nil && m.PID.Address != s.cfg.Cluster.Node.Address():
		if len(s.cl.remotes) >= maxRemotes {
			clear(s.cl.remotes)
		}
		r := &remote{id: id, pid: m.PID, out: held}
		s.cl.remotes[id] = r
		s.forward(id, r, l.listener)
		return
	}
	if len(s.cl.misses) >= maxMisses {
		clear(s.cl.misses)
	}
	s.cl.misses[id] = s.clock()
	for i := range held.Datagrams {
		d := &held.Datagrams[i]
		if h, v := wgproto.Parse(d.Bytes()); v == wgproto.OK && h.Type == wgproto.TypeInitiation && s.pending[idKey(id)] == nil {
			s.admit(ctx, idKey(id), id, d, l.listener)
			continue
		}
		if d.Buf != nil {
			s.drops[stats.UnknownClient]++
		}
	}
	held.Release()
	s.flushDrops()
}

// register enters a session just opened in the cluster's directory; the
// answer comes back as *cluster.Registered.
func (s *Supervisor) register(e *entry) {
	if s.cfg.Cluster == nil || e.forward || e.key.isPlain() {
		return
	}
	delete(s.cl.misses, e.info.Client)
	delete(s.cl.remotes, e.info.Client)
	s.cfg.Cluster.Node.RegisterAsync(s.clusterKey(e.info.Client), e.pid, s.self)
}

// unregister removes an ended session from the cluster's directory.
func (s *Supervisor) unregister(e *entry) {
	if s.cfg.Cluster == nil || e.forward || e.key.isPlain() {
		return
	}
	s.cfg.Cluster.Node.Unregister(s.clusterKey(e.info.Client), e.pid)
}

// registered handles the directory's answer to a registration: if another
// node's session of the client came first, this node lost a race (both
// admitted one of the client's initiations): its session ends, and the
// client's datagrams go to the winner from now on.
func (s *Supervisor) registered(ctx actor.Context, m *cluster.Registered) {
	if m.Err != nil {
		s.cfg.Logger.Warn("register session in the cluster (it is registered again after the next membership change)",
			clientField(m.Key.Client), zap.Error(m.Err))
		return
	}
	if m.Winner == nil || m.Winner.Equal(m.PID) {
		return
	}
	e := s.byPID[m.PID.Id]
	if e == nil || s.sessions[e.key] != e {
		return
	}
	s.cfg.Logger.Info("another node opened this client's session first; ending this one and forwarding to it",
		clientField(m.Key.Client), zap.String("winner", m.Winner.Address))
	how := ending{stopSession: ctx.Stop, stopPolicy: ctx.Stop, events: ctx.ActorSystem().EventStream}
	s.end(how, e, stats.SessionClosed, closed)
	s.cl.remotes[m.Key.Client] = &remote{id: m.Key.Client, pid: m.Winner}
}

// sessionConfig is the cluster part of a new session's config.
func (s *Supervisor) sessionCluster(client wgproto.ClientID, plain, forward bool) *session.Cluster {
	c := s.cfg.Cluster
	if c == nil || plain || forward {
		return nil
	}
	return &session.Cluster{Node: c.Node, Key: s.clusterKey(client), Owner: c.Owner, Listens: c.Listens}
}
