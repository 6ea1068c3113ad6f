package cluster_test

import (
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
)

// startOwnPorts starts n nodes (static peers), each relay on a loopback
// port of its own, in front of upstream, and waits until each counts n
// members.
func startOwnPorts(t *testing.T, n int, upstream netip.AddrPort, owner bool) []*sharedNode {
	t.Helper()
	binds := make([]netip.AddrPort, n)
	for i := range binds {
		binds[i] = cluster.FreeBind(t)
	}
	nodes := make([]*sharedNode, n)
	for i := range nodes {
		f, err := config.FromArgs("127.0.0.1:0", upstream.String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Validate(); err != nil {
			t.Fatal(err)
		}
		log := zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)).With(zap.Int("node", i+1))
		system := relay.NewSystem(log)
		node, err := cluster.Start(system, cluster.Config{Name: "reload", Bind: binds[i], Peers: binds}, log)
		if err != nil {
			t.Fatal(err)
		}
		start := func(cfg config.Relay, opts ...relay.Option) (*relay.Relay, error) {
			return relay.Start(cfg, log, append([]relay.Option{relay.WithSystem(system), relay.WithCluster(node, owner)}, opts...)...)
		}
		r, err := start(f.Relays[0])
		if err != nil {
			node.Close()
			t.Fatal(err)
		}
		sn := &sharedNode{node: node, relay: r, start: start}
		nodes[i] = sn
		t.Cleanup(func() {
			_ = sn.relay.Close()
			node.Close()
			system.Shutdown()
		})
	}
	awaitMembers(t, nodes)
	return nodes
}

// TestClusterRestartAddsListenAddress: a clustered relay started anew with
// one more listening address (as a reload that changes a clustered relay's
// listen list does: it is not made in place) serves clients whose session
// lives on another node through the new address: a client that moves to
// it is forwarded to its session, and the replies come back through it
// (ingress) or, in owner mode, from the owner's own listener of that
// address if it has one, else through it too.
func TestClusterRestartAddsListenAddress(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("protoactor-go's cluster has data races of its own; run without -race: go test ./actors/cluster/")
	}
	for _, mode := range []struct {
		name  string
		owner bool
	}{{"owner", true}, {"ingress", false}} {
		t.Run(mode.name, func(t *testing.T) {
			nodes := startOwnPorts(t, 2, echoServer(t), mode.owner)
			id := [3]byte{0x4e, 0x10, 0xad}
			init := make([]byte, 148)
			init[0] = 1
			copy(init[1:4], id[:])
			resendUntilEcho(t, loopbackSocket(t), nodes[0].relay.ListenAddrs()[0], init, "the initiation through node 1")

			// Node 2 starts anew with a second listening address.
			old := nodes[1].relay
			saved, err := old.Snapshot(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			cfg := old.Config()
			cfg.Listen = append(old.ListenAddrs(), netip.MustParseAddrPort("127.0.0.1:0"))
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			r, err := nodes[1].start(cfg, relay.WithRestore(saved))
			if err != nil {
				t.Fatal(err)
			}
			nodes[1].relay = r
			addrs := r.ListenAddrs()
			if len(addrs) != 2 {
				t.Fatalf("node 2 listens on %v after the restart, want two addresses", addrs)
			}
			warm := make([]byte, 200)
			warm[0] = 4
			copy(warm[1:4], id[:])
			warm[18] = 1
			resendUntilEcho(t, loopbackSocket(t), addrs[1], warm, "a transport through node 2's new address")
			if s := sessionsOn(t, nodes); s[0] != 1 || s[1] != 0 {
				t.Fatalf("sessions by node %v, want [1 0]", s)
			}
		})
	}
}

// resendUntilEcho sends d from c to to until its echo comes back, as a
// WireGuard client retransmits (a node's first datagram of a client it has
// to look up is dropped if the lookup misses or times out), and fails the
// test if none comes within sharedTimeout or it does not come from to.
func resendUntilEcho(t *testing.T, c *net.UDPConn, to netip.AddrPort, d []byte, what string) {
	t.Helper()
	buf := make([]byte, 2048)
	deadline := time.Now().Add(sharedTimeout)
	for {
		if _, err := c.WriteToUDPAddrPort(d, to); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(min(time.Until(deadline), time.Second)))
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err == nil {
			if n != len(d) || from != to {
				t.Fatalf("echo of %s: %d bytes from %v, want %d from %v", what, n, from, len(d), to)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no echo of %s: %v", what, err)
		}
	}
}

// loopbackSocket is a client socket on loopback, closed when the test ends.
func loopbackSocket(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestClusterRestartWithWorkers: a clustered relay started anew with
// another number of workers (as a reload that changes workers does)
// takes its sessions back on their upstream ports, each on the worker its
// client ID now steers to, and registers them again: a client that then
// moves to another node is forwarded to its restored session.
func TestClusterRestartWithWorkers(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("protoactor-go's cluster has data races of its own; run without -race: go test ./actors/cluster/")
	}
	nodes := startOwnPorts(t, 2, echoServer(t), false)
	id := [3]byte{0x3e, 0x57, 0xa1} // odd: worker 1 of 2
	init := make([]byte, 148)
	init[0] = 1
	copy(init[1:4], id[:])
	resendUntilEcho(t, loopbackSocket(t), nodes[0].relay.ListenAddrs()[0], init, "the initiation through node 1")
	before, err := nodes[0].relay.Sessions(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(before.Sessions) != 1 {
		t.Fatalf("node 1 holds %d sessions, want 1", len(before.Sessions))
	}

	old := nodes[0].relay
	saved, err := old.Snapshot(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cfg := old.Config()
	cfg.Listen = old.ListenAddrs() // the port it had
	cfg.Workers = 2
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := nodes[0].start(cfg, relay.WithRestore(saved))
	if err != nil {
		t.Fatal(err)
	}
	nodes[0].relay = r

	warm := make([]byte, 200)
	warm[0] = 4
	copy(warm[1:4], id[:])
	warm[18] = 1
	// The restored session registers again asynchronously: until then a
	// lookup misses and the transport is dropped, and the client resends.
	resendUntilEcho(t, loopbackSocket(t), nodes[1].relay.ListenAddrs()[0], warm, "a transport through node 2 to the restored session")
	after, err := r.Sessions(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Sessions) != 1 || after.Sessions[0].UpstreamLocal != before.Sessions[0].UpstreamLocal {
		t.Fatalf("sessions after the restart %+v, want the one of before on its upstream socket %v", after.Sessions, before.Sessions[0].UpstreamLocal)
	}
	if s := sessionsOn(t, nodes); s[1] != 0 {
		t.Fatalf("sessions by node %v: node 2 opened one", s)
	}
}
