package cluster

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/cluster/clusterpb"
)

// directoryName is the name of the directory actor on every node.
const directoryName = "udpfwd-directory"

// restoreChunk bounds the entries of one Restore message (about 60 bytes
// each), far below the gRPC message limit whatever the session count.
const restoreChunk = 1000

// firstSeen is a cluster.IdentityLookup that never activates: a session is
// created by the node that admitted its client (outside the cluster's
// control), registered in a directory, and found by the other nodes through
// the directory. See the package documentation.
//
// Get, RemovePid, Register, Unregister and onTopology may be called from any
// goroutine; the directory actor owns the directory entries.
type firstSeen struct {
	log    *zap.Logger
	system *actor.ActorSystem
	c      *cluster.Cluster // set by Setup
	dir    *actor.PID       // this node's directory actor

	view atomic.Pointer[view]

	mu  sync.Mutex
	own map[string]*actor.PID // identity → this node's live session

	conflicts atomic.Uint64  // registrations refused because another node's session came first
	epoch     *atomic.Uint64 // Node.Epoch, moved when a cached PID is dropped
}

var _ cluster.IdentityLookup = (*firstSeen)(nil)

func newFirstSeen(system *actor.ActorSystem, log *zap.Logger, epoch *atomic.Uint64) *firstSeen {
	l := &firstSeen{log: log, system: system, own: map[string]*actor.PID{}, epoch: epoch}
	l.view.Store(&view{})
	return l
}

// Setup is called by cluster.StartMember after remote has started (so that
// the directory's PID carries this node's address) and before the provider
// publishes the first topology.
func (l *firstSeen) Setup(c *cluster.Cluster, _ []string, _ bool) {
	l.c = c
	pid, err := l.system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
		return &directory{l: l, entries: map[string]*actor.PID{}}
	}), directoryName)
	if err != nil {
		panic(fmt.Errorf("spawn cluster directory: %w", err))
	}
	l.dir = pid
}

// Shutdown stops the directory actor.
func (l *firstSeen) Shutdown() {
	if l.dir != nil {
		_ = l.system.Root.StopFuture(l.dir).Wait()
	}
}

// Get returns the PID of the session registered for ci, or nil: this node's
// own session if it has one, else what the key's two directory owners hold.
// It never creates anything; only sessions (kind "session") are known.
func (l *firstSeen) Get(ci *cluster.ClusterIdentity) *actor.PID {
	if ci.Kind != SessionKind {
		return nil
	}
	l.mu.Lock()
	pid := l.own[ci.Identity]
	l.mu.Unlock()
	if pid != nil {
		return pid
	}
	v := l.view.Load()
	first, second := v.owners(ci.Identity)
	if first == "" {
		return nil
	}
	q := &clusterpb.Lookup{Identity: ci.Identity}
	futures := []*actor.Future{l.system.Root.RequestFuture(dirPID(first), q, requestTimeout)}
	if second != "" {
		futures = append(futures, l.system.Root.RequestFuture(dirPID(second), q, requestTimeout))
	}
	for _, f := range futures {
		res, err := f.Result()
		if err != nil {
			continue
		}
		if found, ok := res.(*clusterpb.Found); ok && found.Pid != nil && v.has(found.Pid.Address) {
			return toPID(found.Pid)
		}
	}
	return nil
}

// RemovePid forgets a PID that the cluster found dead.
func (l *firstSeen) RemovePid(ci *cluster.ClusterIdentity, pid *actor.PID) {
	if l.c != nil {
		l.c.PidCache.RemoveByValue(ci.Identity, ci.Kind, pid)
	}
}

// ownPID returns this node's own session for identity, or nil.
func (l *firstSeen) ownPID(identity string) *actor.PID {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.own[identity]
}

// register records this node's session for identity: in the node's own
// set (which it re-registers after every topology change) and, by a
// request, with the key's first owner, which copies it to the second. It
// returns the PID the directory holds afterwards: pid, or another node's
// session that registered first (then pid is not kept).
func (l *firstSeen) register(identity string, pid *actor.PID) (*actor.PID, error) {
	l.mu.Lock()
	l.own[identity] = pid
	l.mu.Unlock()
	first, _ := l.view.Load().owners(identity)
	if first == "" {
		// No topology yet: the first one re-registers it.
		return pid, nil
	}
	res, err := l.system.Root.RequestFuture(dirPID(first), &clusterpb.Register{Identity: identity, Pid: fromPID(pid)}, requestTimeout).Result()
	if err != nil {
		return pid, fmt.Errorf("register %s with directory %s: %w", identity, first, err)
	}
	reg, ok := res.(*clusterpb.Registered)
	if !ok || reg.Pid == nil {
		return pid, fmt.Errorf("register %s with directory %s: unexpected answer %T", identity, first, res)
	}
	winner := toPID(reg.Pid)
	if !samePID(winner, pid) {
		l.mu.Lock()
		if samePID(l.own[identity], pid) {
			delete(l.own, identity)
		}
		l.mu.Unlock()
		l.conflicts.Add(1)
	}
	return winner, nil
}

// unregister forgets this node's session for identity, here and in every
// member's directory (a session ends once; members are few).
func (l *firstSeen) unregister(identity string, pid *actor.PID) {
	l.mu.Lock()
	if samePID(l.own[identity], pid) {
		delete(l.own, identity)
	}
	l.mu.Unlock()
	if l.c != nil {
		l.c.PidCache.RemoveByValue(identity, SessionKind, pid)
	}
	msg := &clusterpb.Unregister{Identity: identity, Pid: fromPID(pid)}
	for _, m := range l.view.Load().members {
		l.system.Root.Send(dirPID(m), msg)
	}
}

// onTopology installs a new view at once (lookups filter by it) and has the
// directory actor rebuild: drop what it no longer holds, re-register this
// node's sessions with their owners.
func (l *firstSeen) onTopology(t *cluster.ClusterTopology) {
	v := newView(t.Members)
	l.view.Store(v)
	if l.dir != nil {
		l.system.Root.Send(l.dir, &rebuild{v: v})
	}
}

// ownSnapshot copies this node's sessions.
func (l *firstSeen) ownSnapshot() map[string]*actor.PID {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]*actor.PID, len(l.own))
	for k, v := range l.own {
		out[k] = v
	}
	return out
}

// rebuild tells the directory actor that the topology changed to v.
type rebuild struct{ v *view }

// directory is the actor that holds the entries this node owns (as first or
// second owner) and answers Register, Restore, Unregister and Lookup from
// every node. Its state is soft: owners re-register their sessions on
// every topology change.
type directory struct {
	l       *firstSeen
	entries map[string]*actor.PID
}

// Receive runs on the directory's mailbox goroutine.
func (d *directory) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *clusterpb.Register:
		if m.Pid == nil {
			return
		}
		pid := toPID(m.Pid)
		winner := d.put(m.Identity, pid, false)
		if winner == pid {
			d.replicate(ctx, m.Identity, m.Pid)
		}
		ctx.Respond(&clusterpb.Registered{Pid: fromPID(winner)})
	case *clusterpb.Restore:
		for _, e := range m.Entries {
			if e.Pid != nil {
				d.put(e.Identity, toPID(e.Pid), m.Replica)
			}
		}
	case *clusterpb.Unregister:
		if m.Pid == nil {
			return
		}
		if e := d.entries[m.Identity]; e != nil && e.Address == m.Pid.Address && e.Id == m.Pid.Id {
			delete(d.entries, m.Identity)
		}
		// Every member's directory gets the Unregister: each drops its
		// node's cached PID too.
		if d.l.c != nil {
			d.l.c.PidCache.RemoveByValue(m.Identity, SessionKind, toPID(m.Pid))
		}
		d.l.epoch.Add(1)
	case *clusterpb.Lookup:
		var pid *clusterpb.Pid
		if e := d.entries[m.Identity]; e != nil {
			pid = fromPID(e)
		}
		ctx.Respond(&clusterpb.Found{Pid: pid})
	case *rebuild:
		d.rebuild(ctx, m.v)
	}
}

// put records pid for identity and returns the PID held afterwards. A
// replica (from the key's first owner) overwrites. Otherwise the first
// registration wins against another live node's session; a node replaces
// its own entries (it knows its sessions), and an entry of a node that is
// no longer a member gives way.
func (d *directory) put(identity string, pid *actor.PID, replica bool) *actor.PID {
	e := d.entries[identity]
	if replica || e == nil || e.Address == pid.Address || !d.l.view.Load().has(e.Address) {
		d.entries[identity] = pid
		return pid
	}
	return e
}

// replicate copies a registration to the key's other owner in this node's
// view.
func (d *directory) replicate(ctx actor.Context, identity string, pid *clusterpb.Pid) {
	self := d.l.system.Address()
	first, second := d.l.view.Load().owners(identity)
	other := first
	if first == self {
		other = second
	}
	if other == "" || other == self {
		return
	}
	ctx.Send(dirPID(other), &clusterpb.Restore{Replica: true, Entries: []*clusterpb.Entry{{Identity: identity, Pid: pid}}})
}

// rebuild applies a new view: entries of members that left go (their
// sessions died with them), entries this node no longer owns go (their new
// owners get them re-registered), and this node re-registers its own
// sessions with both owners of each.
func (d *directory) rebuild(ctx actor.Context, v *view) {
	if v != d.l.view.Load() {
		return // a newer view follows in the mailbox
	}
	self := d.l.system.Address()
	for id, pid := range d.entries {
		first, second := v.owners(id)
		if !v.has(pid.Address) || (first != self && second != self) {
			delete(d.entries, id)
		}
	}
	batches := map[string][]*clusterpb.Entry{}
	for id, pid := range d.l.ownSnapshot() {
		e := &clusterpb.Entry{Identity: id, Pid: fromPID(pid)}
		first, second := v.owners(id)
		for _, o := range []string{first, second} {
			if o == "" {
				continue
			}
			batches[o] = append(batches[o], e)
			if len(batches[o]) == restoreChunk {
				ctx.Send(dirPID(o), &clusterpb.Restore{Entries: batches[o]})
				batches[o] = nil
			}
		}
	}
	for o, es := range batches {
		if len(es) > 0 {
			ctx.Send(dirPID(o), &clusterpb.Restore{Entries: es})
		}
	}
}

// dirPID is the directory actor of the member at addr.
func dirPID(addr string) *actor.PID { return actor.NewPID(addr, directoryName) }

func toPID(p *clusterpb.Pid) *actor.PID { return actor.NewPID(p.Address, p.Id) }

func fromPID(p *actor.PID) *clusterpb.Pid { return &clusterpb.Pid{Address: p.Address, Id: p.Id} }

// samePID compares PIDs by address and id; nil equals only nil.
func samePID(a, b *actor.PID) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Address == b.Address && a.Id == b.Id
}
