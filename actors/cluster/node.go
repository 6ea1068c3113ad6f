package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/etcd"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/asynkron/protoactor-go/remote"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/emptypb"
)

// etcdBaseKey is the etcd key prefix under which nodes register, one key
// per node below /udpfwd/<cluster name>/.
const etcdBaseKey = "/udpfwd"

// etcdDialTimeout bounds the start-up check that etcd answers: the pinned
// provider's first request has no deadline and would wait forever.
const etcdDialTimeout = 5 * time.Second

// MemberJoined is published on the actor system's event stream when a node
// joins the cluster as this node sees it (this node too, when it first sees
// itself). Membership events are published on the membership provider's
// goroutine while protoactor holds its member-list lock: subscribers must
// not block (send to an actor instead).
type MemberJoined struct {
	Address netip.AddrPort // the member's cluster address
	ID      string         // the member's actor-system ID, new on every start
}

// MemberLeft is published on the actor system's event stream when a node
// leaves the cluster as this node sees it: closed, killed or unreachable. Its
// sessions are gone; lookups no longer return them.
type MemberLeft struct {
	Address netip.AddrPort
	ID      string
}

// Node is this process's membership in a cluster of relay nodes: the
// protoactor cluster (remote, gossip, membership provider), the session
// directory, and the cross-node datagram path. Its methods may be called
// from any goroutine. Start one Node per actor system, before spawning any
// actor whose PID other nodes are to reach (a PID carries the system's
// address from the moment it is spawned, and that address is set by Start).
type Node struct {
	log    *zap.Logger
	system *actor.ActorSystem
	c      *cluster.Cluster
	lookup *firstSeen
	static *staticProvider // nil with etcd
	self   string          // this node's cluster address as protoactor writes it
	inbox  *actor.PID
	sub    *eventstream.Subscription

	members atomic.Int64
	// epoch changes whenever a PID that lookups returned may have become
	// invalid (Epoch).
	epoch atomic.Uint64

	async asyncQueue

	lookups, lookupMisses atomic.Uint64

	linksMu sync.Mutex
	links   map[string]*link

	received, droppedGone, droppedMalformed atomic.Uint64

	closeOnce sync.Once
}

// Start joins the cluster that cfg describes: it starts protoactor remote on
// Bind, the membership provider and the session directory, and returns
// after protoactor's StartMember (which waits a second). Membership
// converges shortly after, reported by MemberJoined events. A busy port, an
// unreachable etcd or unreadable TLS files are errors here. log receives
// this package's own messages; protoactor logs through the actor system's
// logger.
func Start(system *actor.ActorSystem, cfg Config, log *zap.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rc, clientTLS, err := cfg.remoteConfig()
	if err != nil {
		return nil, err
	}
	// Remote panics when it cannot listen; find out first.
	ln, err := net.Listen("tcp", cfg.Bind.String())
	if err != nil {
		return nil, fmt.Errorf("cluster bind: %w", err)
	}
	_ = ln.Close()

	n := &Node{log: log, system: system, links: map[string]*link{}}
	n.lookup = newFirstSeen(system, log, &n.epoch)

	var provider cluster.ClusterProvider
	if len(cfg.Peers) > 0 {
		p, err := newStaticProvider(cfg, log)
		if err != nil {
			return nil, err
		}
		provider, n.static = p, p
	} else {
		p, err := etcdProvider(cfg, clientTLS, log)
		if err != nil {
			return nil, err
		}
		provider = p
	}

	kind := cluster.NewKind(SessionKind, actor.PropsFromFunc(func(actor.Context) {}))
	ccfg := cluster.Configure(cfg.Name, provider, n.lookup, rc, cluster.WithKinds(kind))
	n.c = cluster.New(system, ccfg)
	n.sub = system.EventStream.Subscribe(n.onEvent)
	if err := n.startMember(); err != nil {
		system.EventStream.Unsubscribe(n.sub)
		if n.static != nil {
			n.static.closeListener()
		}
		if n.c.Remote != nil {
			n.c.Remote.Shutdown(false)
		}
		return nil, err
	}
	n.self = system.Address()
	n.inbox, err = system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &inbox{n: n} }), inboxName)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("spawn cluster inbox: %w", err)
	}
	log.Info("cluster member started", zap.String("cluster", cfg.Name), zap.String("address", n.self))
	return n, nil
}

// startMember runs protoactor's StartMember, which panics on errors.
func (n *Node) startMember() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("start cluster member: %v", r)
		}
	}()
	n.c.StartMember()
	return nil
}

// etcdProvider builds the etcd provider after checking that etcd answers.
// With TLS configured and https URLs, the etcd client uses this node's
// certificate and CA too.
func etcdProvider(cfg Config, clientTLS *tls.Config, log *zap.Logger) (*etcd.Provider, error) {
	ec := clientv3.Config{
		Endpoints:   cfg.Etcd,
		DialTimeout: etcdDialTimeout,
		Logger:      log.Named("etcd"),
	}
	for _, u := range cfg.Etcd {
		if strings.HasPrefix(u, "https://") {
			ec.TLS = clientTLS
		}
	}
	probe, err := clientv3.New(ec)
	if err != nil {
		return nil, fmt.Errorf("cluster etcd: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), etcdDialTimeout)
	_, err = probe.Get(ctx, etcdBaseKey, clientv3.WithPrefix(), clientv3.WithCountOnly())
	cancel()
	_ = probe.Close()
	if err != nil {
		return nil, fmt.Errorf("cluster etcd %s: %w", strings.Join(cfg.Etcd, ","), err)
	}
	p, err := etcd.NewWithConfig(etcdBaseKey, ec)
	if err != nil {
		return nil, fmt.Errorf("cluster etcd: %w", err)
	}
	return p, nil
}

// Address is this node's cluster address as members and PIDs carry it.
func (n *Node) Address() string { return n.self }

// Cluster is the underlying protoactor cluster, for what this package does
// not wrap.
func (n *Node) Cluster() *cluster.Cluster { return n.c }

// Members returns the cluster addresses of the current members, sorted.
func (n *Node) Members() []string {
	return append([]string(nil), n.lookup.view.Load().members...)
}

// Health reports nil while this node counts itself a member of the
// cluster and, with static peers, no peer leaves it out; else why not. A
// node its peers left out rejoins by itself (static.go); until they count
// it again, other nodes cannot reach its sessions. It does not ask the
// etcd provider's GetHealthStatus, which reads a field its watcher writes
// without synchronisation and never clears.
func (n *Node) Health() error {
	if !n.lookup.view.Load().has(n.self) {
		return errors.New("cluster membership: this node is not in its own member view")
	}
	if n.static != nil {
		if by := n.static.excludedBy(); len(by) > 0 {
			return fmt.Errorf("cluster membership: peers %s do not count this node as a member; it is rejoining", strings.Join(by, ","))
		}
	}
	return nil
}

// Register records pid, a session this node admitted for key, in the
// cluster's directory, so that other nodes send the client's datagrams to
// it. It waits for the directory (a remote request, about 200 µs) and
// returns the PID the directory holds: pid, or the session of another node
// that registered id first; the caller then closes its own. On an error
// (the directory's node died unnoticed) the session is still kept and
// re-registered after the next topology change. pid must be an actor of
// this node.
func (n *Node) Register(key Key, pid *actor.PID) (*actor.PID, error) {
	if pid == nil || pid.Address != n.self {
		return nil, fmt.Errorf("register %s: PID %v is not on this node (%s); start the cluster before spawning sessions", key, pid, n.self)
	}
	return n.lookup.register(key.String(), pid)
}

// Unregister removes this node's session pid for key from the directory.
// It does not wait.
func (n *Node) Unregister(key Key, pid *actor.PID) {
	n.lookup.unregister(key.String(), pid)
	n.epoch.Add(1)
}

// Lookup returns the session of key wherever it lives, or nil: from the
// cluster's PID cache, else from the directory (a remote request on a
// miss, then cached). It never creates a session. A PID of a node that is
// no longer a member is never returned. Misses are not cached, so every
// lookup of an unknown client costs a round trip to its directory owners:
// look up on handshake initiations (or rate-limit misses), not on every
// datagram of an unknown client ID. Lookups that ask the directory, and
// those that find nothing, are counted (Stats).
func (n *Node) Lookup(key Key) *actor.PID {
	if pid := n.Cached(key); pid != nil {
		return pid
	}
	id := key.String()
	n.lookups.Add(1)
	pid := n.lookup.Get(cluster.NewClusterIdentity(id, SessionKind))
	if pid == nil {
		n.lookupMisses.Add(1)
		return nil
	}
	n.c.PidCache.Set(id, SessionKind, pid)
	return pid
}

// Cached returns the session of key if this node's PID cache holds it (a
// lookup found it, or it is this node's own), without asking anyone; nil
// otherwise. It never returns a PID of a node that is no longer a member.
func (n *Node) Cached(key Key) *actor.PID {
	id := key.String()
	if pid := n.lookup.ownPID(id); pid != nil {
		return pid
	}
	pid, ok := n.c.PidCache.Get(id, SessionKind)
	if !ok {
		return nil
	}
	if n.lookup.view.Load().has(pid.Address) {
		return pid
	}
	n.c.PidCache.RemoveByValue(id, SessionKind, pid)
	return nil
}

// Epoch changes whenever a PID that Lookup or Cached returned may have
// become invalid: on every topology change, when a session's end is
// announced, and when a peer answers that a session is gone. A caller that
// keeps PIDs of its own (a supervisor's table of remote sessions) checks
// them again with Cached when the epoch moved, an atomic load per check.
func (n *Node) Epoch() uint64 { return n.epoch.Load() }

// Close leaves the cluster: other members are told by gossip that this
// node left gracefully and by the provider that it is gone, so they drop
// its sessions at once instead of after a failure timeout. The actor system
// keeps running (protoactor's own Cluster.Shutdown would shut it down).
func (n *Node) Close() {
	n.closeOnce.Do(func() {
		n.async.close()
		n.c.Gossip.SetState(cluster.GracefullyLeftKey, &emptypb.Empty{})
		if err := n.c.Config.ClusterProvider.Shutdown(true); err != nil {
			n.log.Warn("cluster provider shutdown", zap.Error(err))
		}
		n.system.EventStream.Unsubscribe(n.sub)
		n.lookup.Shutdown()
		n.c.Gossip.Shutdown()
		n.linksMu.Lock()
		for _, l := range n.links {
			_ = n.system.Root.StopFuture(l.pid).Wait()
		}
		n.links = map[string]*link{}
		n.linksMu.Unlock()
		if n.inbox != nil {
			_ = n.system.Root.StopFuture(n.inbox).Wait()
		}
		shutdownRemote(n.c.Remote, n.log)
		n.log.Info("cluster member left", zap.String("address", n.self))
	})
}

// shutdownRemote stops protoactor remote gracefully. The pinned remote
// panics ("send on closed channel") when a peer's connection ends while it
// stops (it signals the connection's channel, which the connection's own
// end has closed): seen when nodes close at once. The panic is on this
// goroutine; the server is then stopped at once instead.
func shutdownRemote(r *remote.Remote, log *zap.Logger) {
	defer func() {
		if p := recover(); p != nil {
			log.Debug("protoactor remote panicked while stopping; stopping its server at once", zap.Any("panic", p))
			r.Shutdown(false)
		}
	}()
	r.Shutdown(true)
}

// onEvent runs on the publisher's goroutine (the membership provider's)
// for every event on the stream; it handles topology changes.
func (n *Node) onEvent(evt any) {
	t, ok := evt.(*cluster.ClusterTopology)
	if !ok {
		return
	}
	n.lookup.onTopology(t)
	n.members.Store(int64(len(t.Members)))
	n.epoch.Add(1)
	for _, m := range t.Left {
		n.dropLink(m.Address())
		n.system.EventStream.Publish(&MemberLeft{Address: parseMember(m), ID: m.Id})
	}
	for _, m := range t.Joined {
		n.system.EventStream.Publish(&MemberJoined{Address: parseMember(m), ID: m.Id})
	}
}

// parseMember returns a member's cluster address; invalid if its host is not
// an IP.
func parseMember(m *cluster.Member) netip.AddrPort {
	ip, err := netip.ParseAddr(strings.Trim(m.Host, "[]"))
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ip, uint16(m.Port))
}
