package cluster

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/racecheck"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/warptest"
)

// Process-level tests on one shared port: three udpfwd processes started
// with --reuse-port (one worker each) bind the same loopback UDP port, and
// the kernel hands each datagram to one of them by its 4-tuple, as an ECMP
// router or anycast does. A client that changes its source port may land
// on another node; the tests choose source ports that land where they want
// by probing from each candidate port and reading which process counted
// the probe.

// holdSharedPort opens a shared (SO_REUSEPORT) socket on a loopback port
// the kernel picks, so that nothing else can take the port while the
// nodes start: their shared sockets join its group. release closes it
// once every node listens, before any client sends (a datagram the kernel
// handed to it would be lost).
func holdSharedPort(t *testing.T) (shared netip.AddrPort, release func()) {
	t.Helper()
	g, err := udpio.ListenGroup(netip.MustParseAddrPort("127.0.0.1:0"), udpio.GroupConfig{Sockets: 1, Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	var once bool
	release = func() {
		if !once {
			once = true
			g.Close()
		}
	}
	t.Cleanup(release)
	return g.LocalAddr(), release
}

// sharedProcs describes n nodes that listen on shared.
func sharedProcs(t *testing.T, n int, shared netip.AddrPort) []*proc {
	t.Helper()
	ps := make([]*proc, n)
	for i := range ps {
		ps[i] = &proc{name: "node" + strconv.Itoa(i+1), listen: shared, cluster: freeBind(t), admin: freeTCP(t)}
	}
	return ps
}

// metricSum sums the samples of p's /metrics whose line starts with
// prefix and contains every one of labels; -1 if p does not answer.
func (p *proc) metricSum(t *testing.T, prefix string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.admin.String() + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var sum float64
lines:
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue lines
			}
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// badType is how many datagrams p dropped as not WireGuard.
func (p *proc) badType(t *testing.T) float64 {
	return p.metricSum(t, "udpfwd_dropped_datagrams_total{", `reason="bad_type"`)
}

// procLandsOn sends a junk datagram from c to shared and reports the index
// of the process that counted it (as bad_type), or -1.
func procLandsOn(t *testing.T, c *net.UDPConn, shared netip.AddrPort, ps []*proc) int {
	t.Helper()
	before := make([]float64, len(ps))
	for i, p := range ps {
		before[i] = p.badType(t)
	}
	if _, err := c.WriteToUDPAddrPort([]byte{0xff, 0, 0, 0}, shared); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for i, p := range ps {
			if p.badType(t) > before[i] {
				return i
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return -1
}

// waitOwner waits until exactly one of ps has logged that it opened a
// session, and returns its index.
func waitOwner(t *testing.T, ps []*proc) int {
	t.Helper()
	deadline := time.Now().Add(processTimeout)
	for {
		owner, total := -1, 0
		for i, p := range ps {
			if n := opened(p); n > 0 {
				owner, total = i, total+n
			}
		}
		if total == 1 {
			return owner
		}
		if total > 1 || time.Now().After(deadline) {
			t.Fatalf("%d sessions opened across the nodes, want 1", total)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestProcessSharedPortRoam: three udpfwd processes on one shared port
// (--reuse-port), static peers; a WireGuard client downloading while it
// moves 8 times, each time to a source port the kernel hands to another
// node, keeps one session and one upstream port, in both reply modes.
func TestProcessSharedPortRoam(t *testing.T) {
	if racecheck.Enabled {
		t.Skip(raceSkip)
	}
	for _, reply := range []string{"owner", "ingress"} {
		t.Run(reply, func(t *testing.T) { sharedRoam(t, reply, false) })
	}
}

// TestProcessSharedPortRoamEtcd is the same with membership through etcd,
// in both reply modes.
func TestProcessSharedPortRoamEtcd(t *testing.T) {
	if racecheck.Enabled {
		t.Skip(raceSkip)
	}
	for _, reply := range []string{"owner", "ingress"} {
		t.Run(reply, func(t *testing.T) { sharedRoam(t, reply, true) })
	}
}

func sharedRoam(t *testing.T, reply string, etcd bool) {
	edge := newEdge(t)
	shared, release := holdSharedPort(t)
	ps := sharedProcs(t, 3, shared)
	membership := peersFlags(ps)
	if etcd {
		membership = []string{"--cluster-etcd", startEtcd(t)}
	}
	for _, p := range ps {
		p.start(t, edge.Addr(), membership, "--cluster-reply", reply, "--reuse-port", "--workers", "1")
	}
	waitJoined(t, ps, 2)
	release()

	ctx, cancel := context.WithTimeout(context.Background(), 3*processTimeout)
	defer cancel()
	c := startClient(t, ctx, edge, warptest.ClientID{0x5a, 0x4e, 0xd0}, shared)
	owner := waitOwner(t, ps)

	const size = 16 << 20
	tr := c.Download(ctx, size, 17)
	at := owner
	visited := map[int]bool{owner: true}
	for i := 1; i <= 8; i++ {
		if err := tr.WaitBytes(ctx, int64(i)*size/10, 20*time.Second); err != nil {
			t.Fatalf("before move %d (from %s): %v", i, ps[at].name, err)
		}
		want := (at + 1) % 3 // another node each time, every node in turn
		if _, err := c.RoamProbe(func(s *net.UDPConn) bool { return procLandsOn(t, s, shared, ps) == want }); err != nil {
			t.Fatalf("move %d to %s: %v", i, ps[want].name, err)
		}
		at = want
		visited[at] = true
	}
	if _, err := tr.Wait(ctx, 20*time.Second); err != nil {
		t.Fatalf("download: %v", err)
	}
	if len(visited) != 3 {
		t.Fatalf("the client reached %d nodes, want 3", len(visited))
	}
	for i, p := range ps {
		want := 0
		if i == owner {
			want = 1
		}
		if n := opened(p); n != want {
			t.Errorf("%s opened %d sessions, want %d (the client's session stays on %s)", p.name, n, want, ps[owner].name)
		}
	}
	if n := len(edge.Router().Sources()); n != 1 {
		t.Errorf("the edge saw %d upstream source addresses, want 1: %v", n, edge.Router().Sources())
	}
	// The client really crossed nodes: each other node forwarded its
	// datagrams to the owner.
	for i, p := range ps {
		if i == owner {
			continue
		}
		if v := p.metricSum(t, "udpfwd_cluster_forwarded_datagrams_total{"); v <= 0 {
			t.Errorf("%s reports %v datagrams forwarded to the owner, want some", p.name, v)
		}
	}
	if v := ps[owner].metricSum(t, "udpfwd_cluster_received_datagrams_total"); v <= 0 {
		t.Errorf("the owner %s reports %v datagrams received from other nodes, want some", ps[owner].name, v)
	}
}
