package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/cluster"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/warptest"
)

// The --nodes demo: several udpfwd nodes (in-process relays, each with its
// own actor system) share one UDP port, as machines behind anycast or
// ECMP, or processes with SO_REUSEPORT, do; the kernel hands each datagram
// to one of them by its 4-tuple. The client's port changes are chosen so
// that each lands on another node. As a cluster the nodes keep the client's
// one session where it was born, and the tunnel lives; without --cluster
// each node knows only its own clients, and the first change breaks it.

// nodesOutcome is what one case of the --nodes demo showed.
type nodesOutcome struct {
	cluster  bool
	setupErr error
	complete bool
	stall    *warptest.StallError
	failure  error
	moves    []int // the node each datagram of the client went to, after each change
	sessions []int // sessions opened by node
	sources  int   // upstream source addresses the edge saw
	servers  int   // WARP servers the client's datagrams reached
}

// runNodesDemo runs the cluster case and the case without --cluster.
func runNodesDemo(ctx context.Context, opts options, stdout io.Writer, logf func(string, ...any)) int {
	fmt.Fprintf(stdout, "warpsim: %d udpfwd nodes sharing one UDP port in front of %d WireGuard servers; a client downloads %s and moves to another node %d times\n\n",
		opts.nodes, opts.servers, formatSize(opts.size), opts.roams)
	cases := []nodesOutcome{runNodesCase(ctx, opts, true, logf), runNodesCase(ctx, opts, false, logf)}
	tw := tabwriter.NewWriter(stdout, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "\tas a cluster (--cluster)\twithout --cluster")
	row := func(label string, cell func(nodesOutcome) string) {
		fmt.Fprint(tw, label)
		for _, c := range cases {
			fmt.Fprint(tw, "\t", cell(c))
		}
		fmt.Fprintln(tw)
	}
	row("download", func(c nodesOutcome) string {
		switch {
		case c.setupErr != nil:
			return "did not run: " + c.setupErr.Error()
		case c.complete:
			return "complete, every byte verified"
		case c.stall != nil:
			return fmt.Sprintf("STALLED at %.0f %%", c.stall.Percent())
		default:
			return fmt.Sprintf("FAILED: %v", c.failure)
		}
	})
	row("nodes reached, in order", func(c nodesOutcome) string { return fmt.Sprint(plusOne(c.moves)) })
	row("sessions opened by node", func(c nodesOutcome) string { return fmt.Sprint(c.sessions) })
	row("upstream ports the edge saw", func(c nodesOutcome) string { return fmt.Sprint(c.sources) })
	row("WARP servers reached", func(c nodesOutcome) string { return fmt.Sprint(c.servers) })
	tw.Flush()
	fmt.Fprintln(stdout)
	if !cases[0].complete || cases[0].sources != 1 || cases[1].complete {
		fmt.Fprintln(stdout, "result: NOT as expected (see above)")
		return 1
	}
	fmt.Fprintln(stdout, "result: as expected: the cluster kept one session, one upstream port and one WARP server across the nodes; without it the first move broke the tunnel")
	return 0
}

func plusOne(v []int) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = x + 1
	}
	return out
}

// demoNode is one in-process udpfwd node.
type demoNode struct {
	relay *relay.Relay
	node  *cluster.Node // nil without --cluster
}

// runNodesCase runs one case of the --nodes demo.
func runNodesCase(ctx context.Context, opts options, clustered bool, logf func(string, ...any)) (o nodesOutcome) {
	o.cluster = clustered
	edge, err := warptest.NewEdge(warptest.EdgeConfig{Servers: opts.servers})
	if err != nil {
		o.setupErr = err
		return o
	}
	defer edge.Close()
	shared, nodes, stop, err := startNodes(opts.nodes, edge.Addr(), clustered)
	if err != nil {
		o.setupErr = err
		return o
	}
	defer stop()
	defer func() {
		for _, n := range nodes {
			o.sessions = append(o.sessions, int(n.relay.Counters().Events(stats.SessionOpened)))
		}
		o.sources = len(edge.Router().Sources())
		o.servers = edge.Router().ServersTouched()
	}()
	id := clientID(opts)
	if id.IsZero() {
		id = warptest.ClientID{0xa8, 0x1a, 0x15}
	}
	client, err := edge.NewClient(warptest.ClientConfig{ID: id, Endpoint: shared, KeepEndpoint: true})
	if err != nil {
		o.setupErr = err
		return o
	}
	defer client.Close()
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	err = client.WaitHandshake(hctx)
	cancel()
	if err != nil {
		o.setupErr = err
		return o
	}
	at := -1
	for i, n := range nodes {
		if n.relay.Counters().Events(stats.SessionOpened) > 0 {
			at = i
		}
	}
	o.moves = append(o.moves, at)
	logf("cluster=%v: session opened on node %d", clustered, at+1)
	tr := client.Download(ctx, opts.size, 1)
	for i := 1; i <= opts.roams; i++ {
		point := opts.size * int64(i) / int64(opts.roams+1)
		if err := tr.WaitBytes(ctx, point, opts.stall); err != nil {
			o.classify(err)
			return o
		}
		want := (at + 1 + i%2) % len(nodes)
		if len(nodes) == 2 {
			want = (at + 1) % 2
		}
		if _, err := client.RoamProbe(func(c *net.UDPConn) bool { return landsOn(c, shared, nodes) == want }); err != nil {
			tr.Cancel()
			o.failure = err
			return o
		}
		at = want
		o.moves = append(o.moves, at)
		logf("cluster=%v: at %d %% the client moved to node %d", clustered, point*100/opts.size, at+1)
	}
	if _, err := tr.Wait(ctx, opts.stall); err != nil {
		o.classify(err)
		return o
	}
	o.complete = true
	return o
}

func (o *nodesOutcome) classify(err error) {
	if !errors.As(err, &o.stall) {
		o.failure = err
	}
}

// landsOn sends a junk datagram from c to shared and reports which node
// counted it, or -1.
func landsOn(c *net.UDPConn, shared netip.AddrPort, nodes []*demoNode) int {
	before := make([]uint64, len(nodes))
	for i, n := range nodes {
		before[i] = n.relay.Counters().Dropped(stats.BadType)
	}
	if _, err := c.WriteToUDPAddrPort([]byte{0xff, 0, 0, 0}, shared); err != nil {
		return -1
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		for i, n := range nodes {
			if n.relay.Counters().Dropped(stats.BadType) != before[i] {
				return i
			}
		}
	}
	return -1
}

// startNodes starts n in-process nodes on one shared loopback port in front
// of upstream: a cluster with static peers, or n independent relays.
func startNodes(n int, upstream netip.AddrPort, clustered bool) (netip.AddrPort, []*demoNode, func(), error) {
	// The first node's socket is opened now, on a port the kernel picks,
	// so that nothing else takes the port before the nodes start.
	first, err := udpio.ListenGroup(netip.MustParseAddrPort("127.0.0.1:0"), udpio.GroupConfig{Sockets: 1, Shared: true})
	if err != nil {
		return netip.AddrPort{}, nil, nil, err
	}
	shared := first.LocalAddr()
	firstGroup := first
	f := &config.File{Relays: []config.Relay{{Name: "warpsim", Listen: []netip.AddrPort{shared}, Upstream: config.HostPortFrom(upstream), ReusePort: true}}}
	if _, err := f.Validate(); err != nil {
		return netip.AddrPort{}, nil, nil, err
	}
	var binds []netip.AddrPort
	if clustered {
		for range n {
			b, err := freeClusterBind()
			if err != nil {
				return netip.AddrPort{}, nil, nil, err
			}
			binds = append(binds, b)
		}
	}
	listen := relay.WithListener(func(ap netip.AddrPort, gc udpio.GroupConfig) (*udpio.Group, error) {
		if g := firstGroup; g != nil {
			firstGroup = nil
			return g, nil
		}
		return udpio.ListenGroup(ap, gc)
	})
	var nodes []*demoNode
	stops := []func(){func() {
		if firstGroup != nil { // no relay took it
			firstGroup.Close()
		}
	}}
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	for i := range n {
		system := relay.NewSystem(zap.NewNop())
		stops = append(stops, system.Shutdown)
		opts := []relay.Option{relay.WithSystem(system), listen}
		var node *cluster.Node
		if clustered {
			node, err = cluster.Start(system, cluster.Config{Name: "warpsim", Bind: binds[i], Peers: binds}, zap.NewNop())
			if err != nil {
				stop()
				return netip.AddrPort{}, nil, nil, fmt.Errorf("start cluster node %d: %w", i+1, err)
			}
			stops = append(stops, node.Close)
			opts = append(opts, relay.WithCluster(node, true))
		}
		r, err := relay.Start(f.Relays[0], zap.NewNop(), opts...)
		if err != nil {
			stop()
			return netip.AddrPort{}, nil, nil, fmt.Errorf("start udpfwd node %d: %w", i+1, err)
		}
		stops = append(stops, func() { _ = r.Close() })
		nodes = append(nodes, &demoNode{relay: r, node: node})
	}
	if clustered {
		deadline := time.Now().Add(handshakeTimeout)
		for _, dn := range nodes {
			for len(dn.node.Members()) != n {
				if time.Now().After(deadline) {
					stop()
					return netip.AddrPort{}, nil, nil, fmt.Errorf("node %s sees %d of %d members", dn.node.Address(), len(dn.node.Members()), n)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	return shared, nodes, stop, nil
}

// freeClusterBind is a loopback port free now whose health port (port + 1)
// is free too.
func freeClusterBind() (netip.AddrPort, error) {
	for range 100 {
		a, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return netip.AddrPort{}, err
		}
		ap := netip.MustParseAddrPort(a.Addr().String())
		b, err := net.Listen("tcp", netip.AddrPortFrom(ap.Addr(), ap.Port()+cluster.HealthPortOffset).String())
		a.Close()
		if err == nil {
			b.Close()
			return ap, nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("no free pair of loopback ports for a cluster node")
}
