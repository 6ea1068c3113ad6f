package cluster_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/udpfwd/udpfwd/actors/cluster"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/racecheck"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/warptest"
)

// Three nodes sharing one UDP port, as processes do with SO_REUSEPORT
// behind anycast: here three relays in one process, each with its own
// actor system and cluster node, whose listening sockets join one
// SO_REUSEPORT group (relay.WithListener). The kernel hands each datagram to
// one of them by its 4-tuple, so a client that changes its source port may
// land on another node: the test picks source ports that land where it
// wants by probing from each candidate port.

const sharedTimeout = 60 * time.Second

// sharedNode is one node of the shared-port cluster.
type sharedNode struct {
	node  *cluster.Node
	relay *relay.Relay
	// start, if set, starts another relay of this node (its actor system
	// and cluster node), as a restart does.
	start func(cfg config.Relay, opts ...relay.Option) (*relay.Relay, error)
}

// awaitMembers waits, bounded, until every node counts all of nodes as
// members.
func awaitMembers(t *testing.T, nodes []*sharedNode) {
	t.Helper()
	deadline := time.Now().Add(sharedTimeout)
	for _, sn := range nodes {
		for len(sn.node.Members()) != len(nodes) {
			if time.Now().After(deadline) {
				t.Fatalf("node %s sees %v, want %d members", sn.node.Address(), sn.node.Members(), len(nodes))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// startShared starts n nodes (static peers) in front of upstream on one
// shared listening address, and waits until each counts n members.
func startShared(t *testing.T, n int, upstream netip.AddrPort, owner bool) (netip.AddrPort, []*sharedNode) {
	t.Helper()
	// The first node's socket is opened now, on a port the kernel picks,
	// so that nothing else takes the port before the nodes start.
	first, err := udpio.ListenGroup(netip.MustParseAddrPort("127.0.0.1:0"), udpio.GroupConfig{Sockets: 1, Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	shared := first.LocalAddr()
	firstGroup := first
	t.Cleanup(func() {
		if firstGroup != nil { // no relay took it
			firstGroup.Close()
		}
	})

	binds := make([]netip.AddrPort, n)
	for i := range binds {
		binds[i] = cluster.FreeBind(t)
	}
	f, err := config.FromArgs(shared.String(), upstream.String())
	if err != nil {
		t.Fatal(err)
	}
	f.Relays[0].ReusePort = true // one worker, on a port the nodes share
	if _, err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	listen := relay.WithListener(func(ap netip.AddrPort, gc udpio.GroupConfig) (*udpio.Group, error) {
		if g := firstGroup; g != nil {
			firstGroup = nil
			return g, nil
		}
		return udpio.ListenGroup(ap, gc)
	})
	nodes := make([]*sharedNode, n)
	for i := range nodes {
		log := zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)).With(zap.Int("node", i+1))
		system := relay.NewSystem(log)
		node, err := cluster.Start(system, cluster.Config{Name: "shared", Bind: binds[i], Peers: binds}, log)
		if err != nil {
			t.Fatal(err)
		}
		r, err := relay.Start(f.Relays[0], log, relay.WithSystem(system), relay.WithCluster(node, owner), listen)
		if err != nil {
			node.Close()
			t.Fatal(err)
		}
		nodes[i] = &sharedNode{node: node, relay: r}
		t.Cleanup(func() {
			_ = r.Close()
			node.Close()
			system.Shutdown()
		})
	}
	awaitMembers(t, nodes)
	return shared, nodes
}

// landsOn sends a junk datagram from c to shared and reports the index of
// the node whose relay counted it (as bad_type), or -1.
func landsOn(t *testing.T, c *net.UDPConn, shared netip.AddrPort, nodes []*sharedNode) int {
	t.Helper()
	before := make([]uint64, len(nodes))
	for i, sn := range nodes {
		before[i] = sn.relay.Counters().Dropped(stats.BadType)
	}
	if _, err := c.WriteToUDPAddrPort([]byte{0xff, 0, 0, 0}, shared); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for i, sn := range nodes {
			if sn.relay.Counters().Dropped(stats.BadType) != before[i] {
				return i
			}
		}
		time.Sleep(time.Millisecond)
	}
	return -1
}

// sessionsOn counts the sessions each node holds.
func sessionsOn(t *testing.T, nodes []*sharedNode) []int {
	t.Helper()
	out := make([]int, len(nodes))
	for i, sn := range nodes {
		l, err := sn.relay.Sessions(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = len(l.Sessions)
	}
	return out
}

// TestSharedPortRoam: a WireGuard client downloading while it moves 8
// times across three nodes sharing one port (each move a new source port
// that the kernel hands to another node) keeps one session, one upstream
// port and one WARP server, in both reply modes.
func TestSharedPortRoam(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("protoactor-go's cluster has data races of its own; run without -race: go test ./actors/cluster/")
	}
	for _, mode := range []struct {
		name  string
		owner bool
	}{{"owner", true}, {"ingress", false}} {
		t.Run(mode.name, func(t *testing.T) {
			edge, err := warptest.NewEdge(warptest.EdgeConfig{Servers: 2})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { edge.Close() })
			shared, nodes := startShared(t, 3, edge.Addr(), mode.owner)
			c, err := edge.NewClient(warptest.ClientConfig{ID: warptest.ClientID{0x5a, 0xed, 0x01}, Endpoint: shared, KeepEndpoint: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 3*sharedTimeout)
			defer cancel()
			if err := c.WaitHandshake(ctx); err != nil {
				t.Fatal(err)
			}
			owner := -1
			for i, n := range sessionsOn(t, nodes) {
				if n == 1 {
					owner = i
				}
			}
			if owner < 0 {
				t.Fatalf("no node holds the client's session: %v", sessionsOn(t, nodes))
			}
			const size = 16 << 20
			tr := c.Download(ctx, size, 11)
			at := owner
			for i := 1; i <= 8; i++ {
				if err := tr.WaitBytes(ctx, int64(i)*size/10, 20*time.Second); err != nil {
					t.Fatalf("before move %d (to node %d): %v", i, at+1, err)
				}
				want := (at + 1) % 3 // another node each time, every node in turn
				if _, err := c.RoamProbe(func(s *net.UDPConn) bool { return landsOn(t, s, shared, nodes) == want }); err != nil {
					t.Fatal(err)
				}
				at = want
			}
			if _, err := tr.Wait(ctx, 20*time.Second); err != nil {
				t.Fatalf("download: %v", err)
			}
			got := sessionsOn(t, nodes)
			for i, n := range got {
				if want := map[bool]int{true: 1, false: 0}[i == owner]; n != want {
					t.Errorf("sessions by node %v, want the one on node %d only", got, owner+1)
					break
				}
			}
			if n := len(edge.Router().Sources()); n != 1 {
				t.Errorf("the edge saw %d upstream source addresses, want 1", n)
			}
			var forwarded uint64
			for i, sn := range nodes {
				if i != owner {
					for _, p := range sn.node.Stats().Peers {
						forwarded += p.Forwarded
					}
				}
			}
			if forwarded == 0 {
				t.Error("the other nodes forwarded nothing to the owner")
			}
		})
	}
}

// echoServer echoes every datagram back to its sender until the test ends.
func echoServer(t *testing.T) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// clientSocket opens a client socket whose datagrams to shared land on
// node want.
func clientSocket(t *testing.T, shared netip.AddrPort, nodes []*sharedNode, want int) *net.UDPConn {
	t.Helper()
	for range 64 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		if landsOn(t, c, shared, nodes) == want {
			_ = c.SetReadBuffer(4 << 20)
			t.Cleanup(func() { c.Close() })
			return c
		}
		c.Close()
	}
	t.Fatalf("no source port lands on node %d", want+1)
	return nil
}

// TestSharedPortBatchesLoseNothing: a client that has moved to a node that
// does not own its session sends 8 × 64 datagrams at once; all of them
// cross to the owner, reach the upstream (an echo server) and come back.
func TestSharedPortBatchesLoseNothing(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("protoactor-go's cluster has data races of its own; run without -race: go test ./actors/cluster/")
	}
	shared, nodes := startShared(t, 2, echoServer(t), true)
	id := [3]byte{0xba, 0x7c, 0x40}
	first := clientSocket(t, shared, nodes, 0)
	init := make([]byte, 148)
	init[0] = 1
	copy(init[1:4], id[:])
	resendUntilEcho(t, first, shared, init, "the initiation through node 1")

	// The client's first datagram at node 2 makes it look the owner up;
	// its echo says the way is known.
	moved := clientSocket(t, shared, nodes, 1)
	warm := make([]byte, 200)
	warm[0] = 4
	copy(warm[1:4], id[:])
	warm[18] = 1
	resendUntilEcho(t, moved, shared, warm, "a transport through node 2")
	const total = 8 * 64
	seen := make([]bool, total)
	for i := range total {
		d := make([]byte, 200)
		d[0] = 4
		copy(d[1:4], id[:])
		d[16], d[17] = byte(i), byte(i>>8)
		if _, err := moved.WriteToUDPAddrPort(d, shared); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	buf := make([]byte, 2048)
	_ = moved.SetReadDeadline(time.Now().Add(20 * time.Second))
	for got < total {
		n, _, err := moved.ReadFromUDPAddrPort(buf)
		if err != nil {
			var fw uint64
			for _, p := range nodes[1].node.Stats().Peers {
				fw += p.Forwarded
			}
			t.Fatalf("%d of %d datagrams came back (node 2 forwarded %d; drops %+v): %v", got, total, fw, nodes[1].node.Stats(), err)
		}
		if n != 200 || buf[0] != 4 || buf[18] != 0 {
			continue
		}
		i := int(buf[16]) | int(buf[17])<<8
		if i < total && !seen[i] {
			seen[i] = true
			got++
		}
	}
	if s := sessionsOn(t, nodes); s[0] != 1 || s[1] != 0 {
		t.Fatalf("sessions by node %v, want [1 0]", s)
	}
}

// TestSharedPortForgedThroughOtherNode: datagrams forged with a client's ID
// that reach a node other than its session's are forwarded to the session,
// whose roaming rules refuse them as from any other address: the session's
// replies stay with the client, whose download completes.
func TestSharedPortForgedThroughOtherNode(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("protoactor-go's cluster has data races of its own; run without -race: go test ./actors/cluster/")
	}
	edge, err := warptest.NewEdge(warptest.EdgeConfig{Servers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { edge.Close() })
	shared, nodes := startShared(t, 2, edge.Addr(), true)
	id := warptest.ClientID{0x0b, 0xad, 0x1d}
	c, err := edge.NewClient(warptest.ClientConfig{ID: id, Endpoint: shared, KeepEndpoint: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*sharedTimeout)
	defer cancel()
	if err := c.WaitHandshake(ctx); err != nil {
		t.Fatal(err)
	}
	owner := 0
	if sessionsOn(t, nodes)[1] == 1 {
		owner = 1
	}
	const size = 8 << 20
	tr := c.Download(ctx, size, 13)
	if err := tr.WaitBytes(ctx, size/4, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	attacker := clientSocket(t, shared, nodes, 1-owner)
	refusedBefore := nodes[owner].relay.Counters().Dropped(stats.UnconfirmedTransport)
	for i := range 200 {
		d := make([]byte, 64)
		d[0] = 4
		copy(d[1:4], id[:])
		d[4], d[5], d[6], d[7] = byte(i), byte(i>>8), 0x5a, 0xa5 // a guessed receiver index
		d[8] = byte(i)
		if _, err := attacker.WriteToUDPAddrPort(d, shared); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tr.Wait(ctx, 20*time.Second); err != nil {
		t.Fatalf("download with forged datagrams coming through the other node: %v", err)
	}
	l, err := nodes[owner].relay.Sessions(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Sessions) != 1 || l.Sessions[0].ClientAddr != c.LocalAddr() {
		t.Fatalf("sessions %+v, want one whose client address is the client's %v", l.Sessions, c.LocalAddr())
	}
	if got := nodes[owner].relay.Counters().Dropped(stats.UnconfirmedTransport) - refusedBefore; got == 0 {
		t.Error("the owner refused none of the forged datagrams: they did not reach it")
	}
}

// TestSharedPortFirstInitiationOnTwoNodes: clients whose first handshake
// reaches two nodes at once (its retransmission took another path) end
// with one session each: if both nodes opened one, the one registered
// second ends and forwards to the first.
func TestSharedPortFirstInitiationOnTwoNodes(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("protoactor-go's cluster has data races of its own; run without -race: go test ./actors/cluster/")
	}
	shared, nodes := startShared(t, 2, echoServer(t), true)
	a := clientSocket(t, shared, nodes, 0)
	b := clientSocket(t, shared, nodes, 1)
	const clients = 16
	for i := range clients {
		init := make([]byte, 148)
		init[0] = 1
		init[1], init[2], init[3] = 0xd0, 0x0b, byte(i+1)
		init[4] = byte(i) // a sender index
		for _, c := range []*net.UDPConn{a, b} {
			if _, err := c.WriteToUDPAddrPort(init, shared); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(sharedTimeout)
	for {
		s := sessionsOn(t, nodes)
		var conflicts uint64
		for _, sn := range nodes {
			conflicts += sn.node.Stats().RegisterConflicts
		}
		opened := nodes[0].relay.Counters().Events(stats.SessionOpened) + nodes[1].relay.Counters().Events(stats.SessionOpened)
		closed := nodes[0].relay.Counters().Events(stats.SessionClosed) + nodes[1].relay.Counters().Events(stats.SessionClosed)
		if s[0]+s[1] == clients && opened == clients+closed {
			t.Logf("sessions by node %v; %d opened twice, %d conflicts seen by directories", s, closed, conflicts)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions by node %v for %d clients (%d opened, %d closed)", s, clients, opened, closed)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSharedPortJunkIDsCostFewLookups: datagrams of client IDs no node has
// cost one lookup per ID, not one per datagram: an ID that missed is
// remembered (for a second) and its datagrams are dropped without asking.
func TestSharedPortJunkIDsCostFewLookups(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("protoactor-go's cluster has data races of its own; run without -race: go test ./actors/cluster/")
	}
	shared, nodes := startShared(t, 2, echoServer(t), true)
	junk := clientSocket(t, shared, nodes, 0)
	const ids, rounds = 50, 20
	before := nodes[0].node.Stats()
	unknownBefore := nodes[0].relay.Counters().Dropped(stats.UnknownClient)
	start := time.Now()
	for r := range rounds {
		for i := range ids {
			d := make([]byte, 64)
			d[0] = 4
			d[1], d[2], d[3] = 0x7a, byte(i), 0x01
			d[8] = byte(r)
			if _, err := junk.WriteToUDPAddrPort(d, shared); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Millisecond) // rounds apart, as a flood's packets come
	}
	deadline := time.Now().Add(sharedTimeout)
	for nodes[0].relay.Counters().Dropped(stats.UnknownClient)-unknownBefore < ids*rounds {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d junk datagrams counted as unknown_client", nodes[0].relay.Counters().Dropped(stats.UnknownClient)-unknownBefore, ids*rounds)
		}
		time.Sleep(10 * time.Millisecond)
	}
	after := nodes[0].node.Stats()
	lookups, misses := after.Lookups-before.Lookups, after.LookupMisses-before.LookupMisses
	// A miss is remembered for a second (the supervisor's missTTL), so an
	// ID may be looked up again once a second while the test runs: on a
	// loaded machine that may be a few seconds, far fewer than the
	// ids*rounds lookups of one per datagram.
	most := uint64(ids * (2 + int(time.Since(start)/time.Second)))
	if lookups < ids || lookups > most || misses != lookups {
		t.Fatalf("%d lookups (%d misses) for %d datagrams of %d junk IDs, want one lookup per ID and at most one more per second each (%d)", lookups, misses, ids*rounds, ids, most)
	}
	if s := sessionsOn(t, nodes); s[0]+s[1] != 0 {
		t.Fatalf("junk transports opened sessions %v", s)
	}
}

// TestReloadListenRestartsClusteredRelay: a clustered relay's listening
// addresses are part of how its sessions answer clients other nodes
// forward, so a reload that changes them starts the relay anew
// (relay.ErrRestart) instead of changing them in place; any other reload
// still applies in place.
func TestReloadListenRestartsClusteredRelay(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("protoactor-go's cluster has data races of its own; run without -race: go test ./actors/cluster/")
	}
	_, nodes := startShared(t, 1, echoServer(t), true)
	r := nodes[0].relay
	cfg := r.Config()
	cfg.IdleTimeout = 7 * time.Minute
	if err := r.Reconfigure(cfg); err != nil {
		t.Fatalf("a new idle timeout: %v, want it applied in place", err)
	}
	cfg.Listen = append(cfg.Listen, netip.MustParseAddrPort("127.0.0.1:0"))
	if err := r.Reconfigure(cfg); !errors.Is(err, relay.ErrRestart) {
		t.Fatalf("a new listening address: %v, want relay.ErrRestart", err)
	}
}
