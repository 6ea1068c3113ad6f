package cluster

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/cluster/clusterpb"
)

// sessionsOn spawns count stand-in sessions on n and registers them, client
// IDs 0..count-1. It returns their PIDs.
func sessionsOn(t *testing.T, n *testNode, count int) []*actor.PID {
	t.Helper()
	pids := make([]*actor.PID, count)
	for i := range pids {
		pids[i], _ = spawnSink(n, 1)
		got, err := n.Register(clientID(i), pids[i])
		if err != nil {
			t.Fatalf("register %s: %v", clientID(i), err)
		}
		if !samePID(got, pids[i]) {
			t.Fatalf("register %s: directory holds %v, want %v", clientID(i), got, pids[i])
		}
	}
	return pids
}

// expectLookups checks that every node finds each client's session at
// want[i] (nil: no session).
func expectLookups(t *testing.T, nodes []*testNode, want []*actor.PID) {
	t.Helper()
	for _, n := range nodes {
		for i, w := range want {
			got := n.Lookup(clientID(i))
			if !samePID(got, w) {
				t.Fatalf("%s: Lookup(%s) = %v, want %v", n.Address(), clientID(i), got, w)
			}
		}
	}
}

// expectAlive checks that the sessions are still running on n.
func expectAlive(t *testing.T, n *testNode, pids []*actor.PID) {
	t.Helper()
	for _, p := range pids {
		if _, ok := n.system.ProcessRegistry.GetLocal(p.Id); !ok {
			t.Fatalf("session %v on %s is gone", p, n.Address())
		}
	}
}

// expectNothingCreatedFor checks that no actor on any node has the
// identity in its id, as an activating lookup (disthash) would spawn.
func expectNothingCreatedFor(t *testing.T, nodes []*testNode, key Key) {
	t.Helper()
	for _, n := range nodes {
		for _, m := range n.system.ProcessRegistry.LocalPIDs.LocalPIDs {
			for _, k := range m.Keys() {
				if strings.Contains(k, key.Client.String()) {
					t.Fatalf("%s: actor %q exists for a client nobody registered", n.Address(), k)
				}
			}
		}
	}
}

// flushDirectories waits until every member's directory has handled what
// from sent it so far: a request from the same system travels behind it.
func flushDirectories(t *testing.T, from *testNode) {
	t.Helper()
	for _, m := range from.Members() {
		if _, err := from.system.Root.RequestFuture(dirPID(m), &clusterpb.Lookup{}, eventTimeout).Result(); err != nil {
			t.Fatalf("directory %s: %v", m, err)
		}
	}
}

// directoryLifecycle is the membership story both providers must pass:
// register on A; B and C find A's sessions; a node joining moves nothing;
// closing a non-owner changes nothing for A's sessions; closing A drops
// them. nodes are A, B, C (running) and D (started here by join).
func directoryLifecycle(t *testing.T, abc []*testNode, join func() *testNode) {
	a, b, c := abc[0], abc[1], abc[2]
	waitMembers(t, abc, abc...)

	// Enough sessions that the join and the leave below move directory
	// entries of some of them.
	const sessions = 48
	pids := sessionsOn(t, a, sessions)
	expectLookups(t, abc, pids)

	// First seen wins: B admitting the same client gets A's session back.
	dup, _ := spawnSink(b, 1)
	if got, err := b.Register(clientID(0), dup); err != nil || !samePID(got, pids[0]) {
		t.Fatalf("a second registration from B = %v, %v; want A's %v", got, err, pids[0])
	}
	b.system.Root.Stop(dup)

	unknown := clientID(sessions + 1)
	for _, n := range abc {
		if got := n.Lookup(unknown); got != nil {
			t.Fatalf("%s: Lookup of an unregistered client = %v, want nil", n.Address(), got)
		}
	}
	expectNothingCreatedFor(t, abc, unknown)

	d := join()
	all := []*testNode{a, b, c, d}
	waitMembers(t, all, all...)
	expectLookups(t, all, pids)
	expectAlive(t, a, pids)

	closeNodes(b)
	rest := []*testNode{a, c, d}
	waitMembers(t, rest, rest...)
	expectLookups(t, rest, pids)
	expectAlive(t, a, pids)

	// A session that ends is unregistered everywhere.
	a.Unregister(clientID(0), pids[0])
	a.system.Root.Stop(pids[0])
	flushDirectories(t, a)
	gone := append([]*actor.PID{nil}, pids[1:]...)
	expectLookups(t, []*testNode{c, d}, gone)

	closeNodes(a)
	waitMembers(t, []*testNode{c, d}, c, d)
	expectLookups(t, []*testNode{c, d}, make([]*actor.PID, sessions))
}

func TestStaticPeersDirectory(t *testing.T) {
	binds := []netip.AddrPort{freeBind(t), freeBind(t), freeBind(t), freeBind(t)}
	cfgs := staticConfigs("static", binds...)
	abc := startNodes(t, cfgs[:3]...)
	expectHealthOnBindIP(t, binds[0], "static")
	directoryLifecycle(t, abc, func() *testNode { return startNode(t, cfgs[3]) })
}

// expectHealthOnBindIP checks that the automanaged health server of the node
// at bind answers on bind's IP and holds its port on that IP only: another
// loopback IP can take the same port (it could not if the server listened
// on 0.0.0.0).
func expectHealthOnBindIP(t *testing.T, bind netip.AddrPort, name string) {
	t.Helper()
	h := healthAddr(bind)
	resp, err := http.Get("http://" + h.String() + "/_health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"cluster":"`+name+`"`) {
		t.Fatalf("health %s: %d %s", h, resp.StatusCode, body)
	}
	other, err := net.Listen("tcp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), h.Port()).String())
	if err != nil {
		t.Fatalf("the health port is held beyond %s: %v", bind.Addr(), err)
	}
	other.Close()
}
