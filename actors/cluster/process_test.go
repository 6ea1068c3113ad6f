package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/racecheck"
	"github.com/udpfwd/udpfwd/internal/warptest"
)

// Process-level tests: udpfwd binaries on loopback, a cluster of three, a
// fake WARP edge behind them and a real WireGuard client (internal/warptest)
// in front. Each node listens on a port of its own; the client moves from
// node to node by changing its source port and its endpoint, as a client
// behind anycast does when its route changes.

// processTimeout bounds every wait of these tests.
const processTimeout = 60 * time.Second

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// udpfwdBinary builds cmd/udpfwd once for the package's tests.
func udpfwdBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "udpfwd-cluster")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "udpfwd")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/udpfwd/udpfwd/cmd/udpfwd").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build udpfwd: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// logBuffer collects a process's stderr and wakes waiters on each write.
type logBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newLogBuffer() *logBuffer { return &logBuffer{changed: make(chan struct{})} }

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor waits until cond holds on the log, or fails the test.
func (l *logBuffer) waitFor(t *testing.T, what string, cond func(log string) bool) {
	t.Helper()
	deadline := time.After(processTimeout)
	for {
		l.mu.Lock()
		s, ch := l.b.String(), l.changed
		l.mu.Unlock()
		if cond(s) {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%s did not happen; log:\n%s", what, s)
		}
	}
}

// proc is one udpfwd node.
type proc struct {
	name    string
	listen  netip.AddrPort
	cluster netip.AddrPort
	admin   netip.AddrPort
	cmd     *exec.Cmd
	log     *logBuffer
	done    chan struct{}
}

// freeUDP returns a loopback UDP port free now.
func freeUDP(t *testing.T) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// freeTCP returns a loopback TCP port free now.
func freeTCP(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return netip.MustParseAddrPort(l.Addr().String())
}

// clusterProcs describes n nodes of cluster name in front of upstream.
func clusterProcs(t *testing.T, n int) []*proc {
	t.Helper()
	ps := make([]*proc, n)
	for i := range ps {
		ps[i] = &proc{name: fmt.Sprintf("node%d", i+1), listen: freeUDP(t), cluster: freeBind(t), admin: freeTCP(t)}
	}
	return ps
}

// start runs p with the cluster flags membership gives.
func (p *proc) start(t *testing.T, upstream netip.AddrPort, membership []string, extra ...string) {
	t.Helper()
	args := append([]string{"-r", p.listen.String(), upstream.String(), "--admin", p.admin.String(),
		"--log-level", "debug", "--log-format", "json", "--cluster", "proc", "--cluster-bind", p.cluster.String()}, membership...)
	args = append(args, extra...)
	p.log = newLogBuffer()
	p.done = make(chan struct{})
	p.cmd = exec.Command(udpfwdBinary(t), args...)
	p.cmd.Stderr = p.log
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s metrics:\n%s", p.name, p.nonZeroMetrics())
		}
		p.stop(t)
		if t.Failed() {
			t.Logf("%s (listen %s, cluster %s) log:\n%s", p.name, p.listen, p.cluster, ownLines(p.log.String()))
		}
	})
}

// ownLines are udpfwd's own lines of a log, without protoactor's.
func ownLines(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, `"logger":"actor"`) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// stop ends p with SIGTERM (SIGKILL if it hangs).
func (p *proc) stop(t *testing.T) {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop on SIGTERM", p.name)
	}
}

// kill ends p with SIGKILL, as a crash would.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(processTimeout):
		t.Fatalf("%s did not die", p.name)
	}
}

// metric reads one sample of /metrics (the first line starting with
// prefix), or -1 if there is none.
func (p *proc) metric(t *testing.T, prefix string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.admin.String() + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// nonZeroMetrics lists p's udpfwd metrics that are not zero.
func (p *proc) nonZeroMetrics() string {
	resp, err := http.Get("http://" + p.admin.String() + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out []string
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "udpfwd_") && !strings.HasSuffix(line, " 0") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

var joinedRE = regexp.MustCompile(`"msg":"cluster member joined"`)

// waitJoined waits until every node of ps has logged that others joined
// and that its relay started (it listens only after its cluster node has
// started).
func waitJoined(t *testing.T, ps []*proc, others int) {
	t.Helper()
	for _, p := range ps {
		p.log.waitFor(t, p.name+" sees its peers and listens", func(s string) bool {
			return len(joinedRE.FindAllString(s, -1)) > others && strings.Contains(s, `"msg":"relay started"`)
		})
	}
}

// peersFlags are the static-membership flags of ps.
func peersFlags(ps []*proc) []string {
	var peers []string
	for _, p := range ps {
		peers = append(peers, p.cluster.String())
	}
	return []string{"--cluster-peers", strings.Join(peers, ",")}
}

// opened counts the sessions p opened, from its log.
func opened(p *proc) int { return strings.Count(p.log.String(), `"msg":"session opened"`) }

// roamTo moves c to node p: a new source port and p's address as its
// endpoint, then a keepalive so the move is seen at once.
func roamTo(t *testing.T, c *warptest.Client, p *proc) {
	t.Helper()
	if err := c.SetEndpoint(p.listen); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Roam(nil); err != nil {
		t.Fatal(err)
	}
}

// TestProcessRoamAcrossNodes: a WireGuard client downloading while it moves
// 8 times across three udpfwd nodes (static peers, ingress replies) keeps
// one session, on the node that admitted it, and so one upstream port; the
// download completes, every byte verified.
func TestProcessRoamAcrossNodes(t *testing.T) {
	if racecheck.Enabled {
		t.Skip(raceSkip)
	}
	roamAcross(t, "ingress", false, warptest.ClientID{0xc1, 0x05, 0x7e})
}

// TestProcessRoamAcrossNodesEtcd is the same with membership through etcd.
func TestProcessRoamAcrossNodesEtcd(t *testing.T) {
	if racecheck.Enabled {
		t.Skip(raceSkip)
	}
	roamAcross(t, "ingress", true, warptest.ClientID{0xc1, 0x05, 0x7e})
}

// TestProcessRoamAcrossNodesWorkers is TestProcessRoamAcrossNodes with two
// workers per node (a private listening group each, steered by client ID):
// the client's datagrams land on the same worker index on every node, the
// other nodes' workers forward them to the owner's session, and its
// replies leave through the node the client wrote to. The client's ID is
// odd, so that it is worker 1's, not the first worker's.
func TestProcessRoamAcrossNodesWorkers(t *testing.T) {
	if racecheck.Enabled {
		t.Skip(raceSkip)
	}
	ps := roamAcross(t, "ingress", false, warptest.ClientID{0xc1, 0x05, 0x7f}, "--workers", "2")
	for _, p := range ps {
		if !strings.Contains(p.log.String(), `"workers":2`) {
			t.Errorf("%s did not start two workers", p.name)
		}
	}
}

// roamAcross runs the roaming download through three nodes started with
// reply mode reply, membership through etcd or static peers, and extra
// flags; it returns the nodes.
func roamAcross(t *testing.T, reply string, etcd bool, id warptest.ClientID, extra ...string) []*proc {
	edge := newEdge(t)
	ps := clusterProcs(t, 3)
	membership := peersFlags(ps)
	if etcd {
		membership = []string{"--cluster-etcd", startEtcd(t)}
	}
	for _, p := range ps {
		p.start(t, edge.Addr(), membership, append([]string{"--cluster-reply", reply}, extra...)...)
	}
	waitJoined(t, ps, 2)

	ctx, cancel := context.WithTimeout(context.Background(), 3*processTimeout)
	defer cancel()
	c := startClient(t, ctx, edge, id, ps[0].listen)
	const size = 24 << 20
	tr := c.Download(ctx, size, 7)
	step := int64(size / 10)
	for i := 1; i <= 8; i++ {
		if err := tr.WaitBytes(ctx, int64(i)*step, 20*time.Second); err != nil {
			t.Fatalf("before roam %d: %v", i, err)
		}
		roamTo(t, c, ps[i%3])
	}
	if _, err := tr.Wait(ctx, 20*time.Second); err != nil {
		t.Fatalf("download: %v", err)
	}
	if n := opened(ps[0]); n != 1 {
		t.Errorf("node1 opened %d sessions, want 1", n)
	}
	for _, p := range ps[1:] {
		if n := opened(p); n != 0 {
			t.Errorf("%s opened %d sessions, want 0 (the client's session stays on node1)", p.name, n)
		}
	}
	if n := len(edge.Router().Sources()); n != 1 {
		t.Errorf("the edge saw %d upstream source addresses, want 1: %v", n, edge.Router().Sources())
	}
	if v := ps[0].metric(t, "udpfwd_cluster_received_datagrams_total"); v <= 0 {
		t.Errorf("node1 reports %v datagrams received from other nodes, want some", v)
	}
	for _, p := range ps[1:] {
		if v := p.metricSum(t, "udpfwd_cluster_forwarded_datagrams_total{"); v <= 0 {
			t.Errorf("%s reports %v datagrams forwarded, want some", p.name, v)
		}
	}
	if v := ps[1].metric(t, "udpfwd_cluster_members"); v != 3 {
		t.Errorf("node2 reports %v members, want 3", v)
	}
	for _, p := range ps {
		resp, err := http.Get("http://" + p.admin.String() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s /healthz: %d, want 200", p.name, resp.StatusCode)
		}
	}
	return ps
}

// startClient starts a WireGuard client of edge that sends to at, and
// waits for its first handshake.
func startClient(t *testing.T, ctx context.Context, edge *warptest.Edge, id warptest.ClientID, at netip.AddrPort) *warptest.Client {
	t.Helper()
	c, err := edge.NewClient(warptest.ClientConfig{ID: id, Endpoint: at, KeepEndpoint: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.WaitHandshake(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// newEdge starts a fake WARP edge of two servers for t.
func newEdge(t *testing.T) *warptest.Edge {
	t.Helper()
	edge, err := warptest.NewEdge(warptest.EdgeConfig{Servers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { edge.Close() })
	return edge
}

// startCluster starts n static-peer nodes in front of a new edge and waits
// until they see each other.
func startCluster(t *testing.T, n int, extra ...string) (*warptest.Edge, []*proc) {
	t.Helper()
	edge := newEdge(t)
	ps := clusterProcs(t, n)
	for _, p := range ps {
		p.start(t, edge.Addr(), peersFlags(ps), extra...)
	}
	waitJoined(t, ps, n-1)
	return edge, ps
}

// TestProcessNodeFailure: SIGKILL of a node that does not own a client's
// session leaves its download, through a third node, intact; SIGKILL of the
// owner ends the session, and the client works again after its next
// handshake, on a new session (a new upstream port) at the node it now
// reaches.
func TestProcessNodeFailure(t *testing.T) {
	if racecheck.Enabled {
		t.Skip(raceSkip)
	}
	edge, ps := startCluster(t, 3, "--cluster-reply", "ingress")
	ctx, cancel := context.WithTimeout(context.Background(), 3*processTimeout)
	defer cancel()
	c := startClient(t, ctx, edge, warptest.ClientID{0xfa, 0x11, 0x01}, ps[0].listen)
	const size = 16 << 20
	tr := c.Download(ctx, size, 3)
	if err := tr.WaitBytes(ctx, size/8, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	roamTo(t, c, ps[1]) // node2 forwards to node1, the owner
	if err := tr.WaitBytes(ctx, size/4, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	ps[2].kill(t) // neither the owner nor on the path
	if _, err := tr.Wait(ctx, 20*time.Second); err != nil {
		t.Fatalf("download after a non-owner's death: %v", err)
	}
	if n := len(edge.Router().Sources()); n != 1 {
		t.Fatalf("the edge saw %d upstream source addresses, want 1", n)
	}

	ps[0].kill(t) // the owner
	if err := c.Rehandshake(ctx); err != nil {
		t.Fatalf("no handshake after the owner's death: %v", err)
	}
	if err := c.Echo(ctx, []byte("after the owner died")); err != nil {
		t.Fatal(err)
	}
	if n := opened(ps[1]); n != 1 {
		t.Errorf("node2 opened %d sessions, want 1 (the client's new one)", n)
	}
	if n := len(edge.Router().Sources()); n != 2 {
		t.Errorf("the edge saw %d upstream source addresses, want 2 (the dead owner's, then node2's)", n)
	}
}

// TestProcessJoinMovesNothing: a node that joins while a client downloads
// through the cluster moves no session: the client roams onto it and back,
// and keeps its one session and upstream port.
func TestProcessJoinMovesNothing(t *testing.T) {
	if racecheck.Enabled {
		t.Skip(raceSkip)
	}
	edge := newEdge(t)
	ps := clusterProcs(t, 3)
	for _, p := range ps[:2] {
		p.start(t, edge.Addr(), peersFlags(ps), "--cluster-reply", "ingress")
	}
	waitJoined(t, ps[:2], 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*processTimeout)
	defer cancel()
	c := startClient(t, ctx, edge, warptest.ClientID{0x10, 0x1e, 0xd0}, ps[1].listen)
	const size = 16 << 20
	tr := c.Download(ctx, size, 5)
	if err := tr.WaitBytes(ctx, size/8, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	ps[2].start(t, edge.Addr(), peersFlags(ps), "--cluster-reply", "ingress")
	waitJoined(t, ps[2:], 2)
	roamTo(t, c, ps[2])
	if err := tr.WaitBytes(ctx, size/2, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	roamTo(t, c, ps[0])
	if _, err := tr.Wait(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := opened(ps[1]); n != 1 {
		t.Errorf("node2 opened %d sessions, want 1", n)
	}
	for _, p := range []*proc{ps[0], ps[2]} {
		if n := opened(p); n != 0 {
			t.Errorf("%s opened %d sessions, want 0", p.name, n)
		}
	}
	if n := len(edge.Router().Sources()); n != 1 {
		t.Errorf("the edge saw %d upstream source addresses, want 1", n)
	}
}

// TestProcessRestartKeepsSessions: a node restarted with its state file
// takes its sessions back on the same upstream ports and registers them
// again, so that a client that then moves to another node is forwarded to
// its restored session: one upstream port all along.
func TestProcessRestartKeepsSessions(t *testing.T) {
	if racecheck.Enabled {
		t.Skip(raceSkip)
	}
	edge := newEdge(t)
	ps := clusterProcs(t, 2)
	state := []string{"--state-file", filepath.Join(t.TempDir(), "state.json"), "--cluster-reply", "ingress"}
	ps[0].start(t, edge.Addr(), peersFlags(ps), state...)
	ps[1].start(t, edge.Addr(), peersFlags(ps), "--cluster-reply", "ingress")
	waitJoined(t, ps, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*processTimeout)
	defer cancel()
	c := startClient(t, ctx, edge, warptest.ClientID{0x5e, 0x55, 0x10}, ps[0].listen)
	if err := c.Echo(ctx, []byte("before the restart")); err != nil {
		t.Fatal(err)
	}

	ps[0].stop(t)
	ps[0].start(t, edge.Addr(), peersFlags(ps), state...)
	ps[0].log.waitFor(t, "node1 restores its session", func(s string) bool { return strings.Contains(s, `"msg":"session restored"`) })
	waitJoined(t, ps[:1], 1)
	ps[1].log.waitFor(t, "node2 sees node1 again", func(s string) bool { return len(joinedRE.FindAllString(s, -1)) >= 3 })

	roamTo(t, c, ps[1])
	if err := c.Echo(ctx, []byte("through node2 to the restored session")); err != nil {
		t.Fatal(err)
	}
	if n := opened(ps[1]); n != 0 {
		t.Errorf("node2 opened %d sessions, want 0", n)
	}
	if n := len(edge.Router().Sources()); n != 1 {
		t.Errorf("the edge saw %d upstream source addresses, want 1 (the restored session kept its port)", n)
	}
}
