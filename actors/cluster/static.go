package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/cluster"
	"go.uber.org/zap"
)

// Static membership (Config.Peers). protoactor's automanaged provider,
// which phase 1 used, drops a peer from the members after one health poll
// that fails (a timeout on a busy machine is enough), and protoactor then
// blocks that member's ID for good: the peer is never a member again until
// it restarts, while it goes on counting itself one, and its sessions are
// unreachable from the others. This provider does the same job with two
// changes:
//
//   - A poll that times out or fails is tolerated staticMissLimit-1 times
//     in a row: only staticMissLimit misses in a row (a node that hangs, or
//     a network partition) drop the peer. A refused connection drops it at
//     once: nothing listens on its health port, so the node is gone
//     (killed, or closed and told the others by closing its port).
//   - A node whose peers no longer count it (their health documents list
//     the members each of them sees) rejoins with a new member ID: member
//     IDs are the actor system's ID with an incarnation number, so a node
//     that was dropped and blocked comes back as a new member, and its
//     sessions, which it re-registers on the change, are reachable again.
const (
	// staticMissLimit is how many health polls of a peer in a row may fail
	// (time out, answer an error) before the peer is no longer a member:
	// about 3 s at one poll a second.
	staticMissLimit = 3
	// staticPollTimeout bounds one health poll.
	staticPollTimeout = time.Second
	// rejoinAfter is how many of a peer's health documents in a row must
	// leave this node out before it rejoins with a new member ID. A peer
	// that has just started, or has just seen this node start, lists it
	// after its next poll (a second); 5 leaves room for a busy machine.
	rejoinAfter = 5
	// rejoinBackoff is the least time between two rejoins, doubling up to
	// rejoinBackoffMax while peers keep leaving this node out (a peer that
	// cannot reach it at all would otherwise make it rejoin at every
	// check).
	rejoinBackoff    = 5 * time.Second
	rejoinBackoffMax = time.Minute
)

// healthDoc is what a node's health endpoint answers: who it is, and the
// member IDs it counts as members now.
type healthDoc struct {
	Cluster string   `json:"cluster"`
	ID      string   `json:"id"`
	Host    string   `json:"host"`
	Port    int      `json:"port"`
	Kinds   []string `json:"kinds"`
	View    []string `json:"view"`
}

// peerState is the poller's record of one peer.
type peerState struct {
	doc       *healthDoc // from its last successful poll
	member    bool
	misses    int // failed polls in a row
	excluding int // its documents in a row that left this node out
}

// staticProvider is a cluster.ClusterProvider for a fixed list of peers.
// Its poller runs on a goroutine of its own and is the only writer of the
// peers' state and of the topology it hands protoactor.
type staticProvider struct {
	log   *zap.Logger
	cfg   Config
	ln    net.Listener
	srv   *http.Server
	http  *http.Client
	peers []netip.AddrPort // the other nodes' health addresses

	c           *cluster.Cluster
	incarnation atomic.Uint64
	view        atomic.Pointer[[]string] // member IDs this node sees, for its health document
	excluded    atomic.Pointer[[]string] // addresses of peers that leave this node out
	rejoins     atomic.Uint64

	// failPoll, if set (tests), makes a poll of the peer at that health
	// address fail as a timeout would.
	failPoll atomic.Pointer[func(netip.AddrPort) bool]

	state       map[netip.AddrPort]*peerState
	lastRejoin  time.Time
	backoff     time.Duration
	stop, done  chan struct{}
	stopOnce    sync.Once
	startedPoll bool
}

// newStaticProvider opens the health listener on Bind's IP (a busy port
// is a start error, not a log line) and prepares the poller.
func newStaticProvider(cfg Config, log *zap.Logger) (*staticProvider, error) {
	self := healthAddr(cfg.Bind)
	ln, err := net.Listen("tcp", self.String())
	if err != nil {
		return nil, fmt.Errorf("cluster health port (bind port + %d): %w", HealthPortOffset, err)
	}
	p := &staticProvider{
		log: log, cfg: cfg, ln: ln,
		http:    &http.Client{Timeout: staticPollTimeout},
		state:   map[netip.AddrPort]*peerState{},
		backoff: rejoinBackoff,
		stop:    make(chan struct{}), done: make(chan struct{}),
	}
	p.incarnation.Store(1)
	for _, peer := range cfg.Peers {
		if h := healthAddr(peer); h != self && !slices.Contains(p.peers, h) {
			p.peers = append(p.peers, h)
			p.state[h] = &peerState{}
		}
	}
	empty := []string{}
	p.view.Store(&empty)
	p.excluded.Store(&empty)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_health", p.serveHealth)
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: staticPollTimeout}
	return p, nil
}

// memberID is this node's member ID now: the actor system's ID and its
// incarnation.
func (p *staticProvider) memberID() string {
	return p.c.ActorSystem.ID + "#" + strconv.FormatUint(p.incarnation.Load(), 10)
}

// self is this node as a member.
func (p *staticProvider) self() *cluster.Member {
	return &cluster.Member{Id: p.memberID(), Host: p.cfg.Bind.Addr().Unmap().String(), Port: int32(p.cfg.Bind.Port()), Kinds: p.c.GetClusterKinds()}
}

func (p *staticProvider) serveHealth(w http.ResponseWriter, _ *http.Request) {
	m := p.self()
	doc := healthDoc{Cluster: p.cfg.Name, ID: m.Id, Host: m.Host, Port: int(m.Port), Kinds: m.Kinds, View: *p.view.Load()}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&doc)
}

// StartMember serves the health endpoint and starts the poller; the first
// topology (this node alone, then with whoever answers) follows at once.
func (p *staticProvider) StartMember(c *cluster.Cluster) error {
	p.c = c
	go func() { _ = p.srv.Serve(p.ln) }()
	p.startedPoll = true
	go p.poll()
	return nil
}

// StartClient is not used: every udpfwd node is a member.
func (p *staticProvider) StartClient(*cluster.Cluster) error {
	return errors.New("cluster: static membership has no clients")
}

// Shutdown stops polling and closes the health endpoint: the peers' next
// poll is refused, and they drop this node at once.
func (p *staticProvider) Shutdown(bool) error {
	p.stopOnce.Do(func() {
		close(p.stop)
		if p.startedPoll {
			<-p.done
		}
		_ = p.srv.Close()
		_ = p.ln.Close()
	})
	return nil
}

// closeListener closes the health listener of a provider that never
// started.
func (p *staticProvider) closeListener() { _ = p.ln.Close() }

// pollResult is what one poll of a peer gave.
type pollResult struct {
	doc     *healthDoc
	refused bool
}

// poll runs the poller until Shutdown.
func (p *staticProvider) poll() {
	defer close(p.done)
	p.round() // the first topology at once
	t := time.NewTicker(staticPollInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.round()
		}
	}
}

// round polls every peer once, hands protoactor the members, and rejoins if
// the peers leave this node out.
func (p *staticProvider) round() {
	results := make([]pollResult, len(p.peers))
	var wg sync.WaitGroup
	for i, peer := range p.peers {
		wg.Go(func() { results[i] = p.pollPeer(peer) })
	}
	wg.Wait()
	select {
	case <-p.stop:
		return // do not publish a topology while the node closes
	default:
	}
	me := p.memberID()
	members := []*cluster.Member{p.self()}
	var excluded []string
	for i, peer := range p.peers {
		st, r := p.state[peer], results[i]
		switch {
		case r.doc != nil:
			st.doc, st.misses, st.member = r.doc, 0, true
			if len(r.doc.View) > 0 && !slices.Contains(r.doc.View, me) {
				st.excluding++
			} else {
				st.excluding = 0
			}
		case r.refused:
			st.member, st.misses, st.excluding = false, staticMissLimit, 0
		default:
			st.misses++
			if st.misses >= staticMissLimit {
				st.member, st.excluding = false, 0
			}
		}
		if st.member && st.doc != nil {
			members = append(members, &cluster.Member{Id: st.doc.ID, Host: st.doc.Host, Port: int32(st.doc.Port), Kinds: st.doc.Kinds})
			if st.excluding >= 2 {
				excluded = append(excluded, netip.AddrPortFrom(peer.Addr(), peer.Port()-HealthPortOffset).String())
			}
		}
	}
	p.excluded.Store(&excluded)
	p.c.MemberList.UpdateClusterTopology(members)
	ids := make([]string, 0, len(members))
	for _, m := range p.c.MemberList.Members().Members() {
		ids = append(ids, m.Id)
	}
	p.view.Store(&ids)
	p.maybeRejoin()
}

// pollPeer asks one peer for its health document.
func (p *staticProvider) pollPeer(peer netip.AddrPort) pollResult {
	if f := p.failPoll.Load(); f != nil && (*f)(peer) {
		return pollResult{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), staticPollTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+peer.String()+"/_health", nil)
	if err != nil {
		return pollResult{}
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return pollResult{refused: errors.Is(err, syscall.ECONNREFUSED)}
	}
	defer resp.Body.Close()
	var doc healthDoc
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&doc) != nil || doc.Cluster != p.cfg.Name || doc.ID == "" {
		return pollResult{}
	}
	return pollResult{doc: &doc}
}

// maybeRejoin gives this node a new member ID when a peer has left it out
// of rejoinAfter documents in a row, at most once per backoff.
func (p *staticProvider) maybeRejoin() {
	var who []string
	for peer, st := range p.state {
		if st.member && st.excluding >= rejoinAfter {
			who = append(who, peer.String())
		}
	}
	if len(who) == 0 {
		if time.Since(p.lastRejoin) > 2*rejoinBackoffMax {
			p.backoff = rejoinBackoff
		}
		return
	}
	if !p.lastRejoin.IsZero() && time.Since(p.lastRejoin) < p.backoff {
		return
	}
	if !p.lastRejoin.IsZero() {
		p.backoff = min(2*p.backoff, rejoinBackoffMax)
	}
	p.lastRejoin = time.Now()
	old := p.memberID()
	p.incarnation.Add(1)
	p.rejoins.Add(1)
	for _, st := range p.state {
		st.excluding = 0
	}
	slices.Sort(who)
	p.log.Warn("cluster: peers no longer count this node as a member (they dropped it after missed health polls); rejoining with a new member ID",
		zap.Strings("peers_health", who), zap.String("old_member_id", old), zap.String("member_id", p.memberID()))
	p.c.MemberList.UpdateClusterTopology(append([]*cluster.Member{p.self()}, p.otherMembers()...))
}

// otherMembers are the peers that are members now.
func (p *staticProvider) otherMembers() []*cluster.Member {
	var out []*cluster.Member
	for _, peer := range p.peers {
		if st := p.state[peer]; st.member && st.doc != nil {
			out = append(out, &cluster.Member{Id: st.doc.ID, Host: st.doc.Host, Port: int32(st.doc.Port), Kinds: st.doc.Kinds})
		}
	}
	return out
}

// excludedBy lists the cluster addresses of peers whose last documents
// leave this node out.
func (p *staticProvider) excludedBy() []string { return *p.excluded.Load() }
