// Command warpsim shows in a few seconds what udpfwd is for. It starts a fake
// Cloudflare WARP edge on loopback (WireGuard servers sharing one key behind
// an ECMP router that hashes each datagram's UDP 4-tuple to a server), then a
// WARP-like client that downloads a verified stream through the tunnel and
// changes its local UDP port a few times on the way, as a phone does when it
// moves between networks.
//
// Through udpfwd the download completes: udpfwd sends every datagram of the
// client from one source port, so the router keeps hashing it to the same
// server. Straight to the edge it stalls at the first port change: the new
// port hashes to another server, which has no session for the client.
//
// It exits 0 when the relay case completes and the direct case stalls (or,
// with --relay-only or --direct-only, when the case that ran did), and always
// ends by itself within a minute.
//
// With --plain the client sends no client ID, as plain WireGuard does. With
// --endpoints 2 --kill-endpoint the edge answers on two addresses, udpfwd
// gets both as a pool, and the endpoint the client's session uses goes
// dark in the middle of the download: the demo shows udpfwd moving the
// session to the other endpoint and the client working again (failover.go).
//
// Usage:
//
//	warpsim [--servers 3] [--roams 3] [--size 64MiB] [--relay-only | --direct-only]
//	        [--plain] [--endpoints N [--kill-endpoint]] [--relay ADDR --edge ADDR[,ADDR...]]
//	        [--nodes 3]
//
// With --nodes N, N udpfwd nodes share one UDP port (as behind anycast or
// ECMP) and the client moves from node to node: as a cluster the tunnel
// stays on one session, one upstream port and one server; the same nodes
// without --cluster break it (nodes.go).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/udpfwd/udpfwd/internal/cli"
	"github.com/udpfwd/udpfwd/internal/warptest"
)

// Bounds that keep the demo within a minute.
const (
	totalTimeout     = 50 * time.Second
	handshakeTimeout = 10 * time.Second
	// watchdog ends the process should shutting down after totalTimeout
	// itself hang.
	watchdog = 58 * time.Second
)

// options are the command-line flags.
type options struct {
	servers    int
	roams      int
	size       int64
	stall      time.Duration
	directOnly bool
	relayOnly  bool
	relay      netip.AddrPort   // a running relay, or invalid for the in-process one
	edge       []netip.AddrPort // where the edge's endpoints listen in the relay case
	verbose    bool
	plain      bool // the client sends no client ID
	endpoints  int  // the edge's endpoint addresses
	kill       bool // an endpoint goes dark mid-download
	nodes      int  // udpfwd nodes sharing one port (nodes.go); 0 is the usual demo
}

func main() {
	time.AfterFunc(watchdog, func() {
		fmt.Fprintln(os.Stderr, "warpsim: did not finish within a minute")
		os.Exit(1)
	})
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "warpsim:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), totalTimeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()

	logf := func(string, ...any) {}
	if opts.verbose {
		logf = func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
	}
	if opts.kill {
		return runFailoverDemo(ctx, opts, stdout, logf)
	}
	if opts.nodes > 0 {
		return runNodesDemo(ctx, opts, stdout, logf)
	}
	fmt.Fprintf(stdout, "warpsim: %d WireGuard servers sharing one key behind an ECMP router; a client downloads %s and changes its UDP port %d times\n\n",
		opts.servers, formatSize(opts.size), opts.roams)

	var cases []outcome
	if !opts.directOnly {
		cases = append(cases, runCase(ctx, opts, true, logf))
	}
	if !opts.relayOnly {
		cases = append(cases, runCase(ctx, opts, false, logf))
	}
	printTable(stdout, cases)

	ok := true
	for _, c := range cases {
		if !c.asExpected() {
			ok = false
		}
	}
	fmt.Fprintln(stdout)
	if !ok {
		fmt.Fprintln(stdout, "result: NOT as expected (see above)")
		return 1
	}
	switch {
	case len(cases) == 2:
		fmt.Fprintf(stdout, "result: as expected: through udpfwd the tunnel stayed on one server across %d port changes; straight to the edge the first change broke it\n", opts.roams)
	case opts.relayOnly:
		fmt.Fprintf(stdout, "result: as expected: through udpfwd the tunnel stayed on one server across %d port changes\n", opts.roams)
	default:
		fmt.Fprintln(stdout, "result: as expected: straight to the edge a port change broke the tunnel")
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := cli.NewFlagSet("warpsim")
	var o options
	var size, relay, edge string
	fs.BoolVar(&o.plain, "plain", false, "the client sends no client ID, as plain WireGuard does (through udpfwd: its --zero-id track)")
	fs.IntVar(&o.endpoints, "endpoints", 1, "endpoint addresses of the edge (routers in front of the same servers); udpfwd gets them all as a pool")
	fs.BoolVar(&o.kill, "kill-endpoint", false, "make the endpoint the client's session uses go dark mid-download, through udpfwd (needs --endpoints 2 or more)")
	fs.IntVar(&o.nodes, "nodes", 0, "run `N` udpfwd nodes sharing one UDP port, with and without --cluster, and move the client across them")
	fs.IntVar(&o.servers, "servers", warptest.DefaultServers, "WireGuard servers behind the edge's ECMP router, at least 2")
	fs.IntVar(&o.roams, "roams", 3, "times the client changes its local UDP port during the download, at least 1")
	fs.StringVar(&size, "size", "64MiB", "size of the download, e.g. 16MiB, 1GiB or 1000000")
	fs.DurationVar(&o.stall, "stall", 3*time.Second, "no progress for this long counts as a stall; under 15s, when WireGuard would re-handshake")
	fs.BoolVar(&o.directOnly, "direct-only", false, "only run the client straight to the edge")
	fs.BoolVar(&o.relayOnly, "relay-only", false, "only run the client through the relay")
	fs.StringVar(&relay, "relay", "", "use the relay already running at this loopback `ADDR` (its upstream must be --edge) instead of an in-process udpfwd")
	fs.StringVar(&edge, "edge", "127.0.0.1:0", "loopback `ADDR` of the edge's router in the relay case (set it to a running relay's upstream); with --endpoints, one per endpoint, comma-separated")
	fs.BoolVarP(&o.verbose, "v", "v", false, "tell each step on stderr")
	if err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintln(stderr, "usage: warpsim [flags]\n\nShows a roaming WireGuard client breaking on an ECMP-hashed WARP edge, and udpfwd fixing it.\n\nflags:")
			cli.PrintFlags(stderr, fs)
		}
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if o.size, err = parseSize(size); err != nil {
		return o, err
	}
	switch {
	case o.servers < 2:
		return o, fmt.Errorf("--servers %d: need at least 2 for a port change to reach another server", o.servers)
	case o.roams < 1:
		return o, fmt.Errorf("--roams %d: need at least 1", o.roams)
	case o.stall <= 0 || o.stall >= 15*time.Second:
		return o, fmt.Errorf("--stall %v: must be between 0 and 15s", o.stall)
	case o.directOnly && o.relayOnly:
		return o, errors.New("--direct-only and --relay-only exclude each other")
	case o.endpoints < 1 || o.endpoints > maxEndpoints:
		return o, fmt.Errorf("--endpoints %d: want 1..%d", o.endpoints, maxEndpoints)
	case o.kill && o.endpoints < 2:
		return o, errors.New("--kill-endpoint needs --endpoints 2 or more: a client whose only endpoint dies has nowhere to go")
	case o.nodes != 0 && (o.nodes < 2 || o.nodes > 8):
		return o, fmt.Errorf("--nodes %d: want 2..8", o.nodes)
	case o.nodes != 0 && (o.kill || o.plain || o.relay.IsValid() || o.directOnly || o.relayOnly):
		return o, errors.New("--nodes runs its own nodes with a WARP client: it excludes --kill-endpoint, --plain, --relay, --direct-only and --relay-only")
	case o.kill && o.directOnly:
		return o, errors.New("--kill-endpoint runs through udpfwd: it excludes --direct-only")
	}
	for _, e := range strings.Split(edge, ",") {
		a, err := loopbackAddr("--edge", strings.TrimSpace(e))
		if err != nil {
			return o, err
		}
		o.edge = append(o.edge, a)
	}
	switch {
	case len(o.edge) == 1 && o.endpoints > 1:
		for range o.endpoints - 1 {
			o.edge = append(o.edge, netip.AddrPortFrom(o.edge[0].Addr(), 0))
		}
	case len(o.edge) != o.endpoints:
		return o, fmt.Errorf("--edge lists %d addresses for %d endpoints", len(o.edge), o.endpoints)
	}
	if relay != "" {
		if o.relay, err = loopbackAddr("--relay", relay); err != nil {
			return o, err
		}
		for _, e := range o.edge {
			if o.relay.Port() == 0 || e.Port() == 0 {
				return o, errors.New("--relay needs --edge set to the ports the relay forwards to, one per endpoint")
			}
		}
	}
	return o, nil
}

// maxEndpoints bounds --endpoints: a pool, not a census of WARP's addresses.
const maxEndpoints = 8

func loopbackAddr(flag, s string) (netip.AddrPort, error) {
	a, err := netip.ParseAddrPort(s)
	if err != nil {
		return a, fmt.Errorf("%s %q: %w", flag, s, err)
	}
	if !a.Addr().IsLoopback() {
		return a, fmt.Errorf("%s %v: warpsim only talks to loopback addresses", flag, a)
	}
	return a, nil
}

// parseSize reads a byte count with an optional binary suffix (KiB, MiB, GiB;
// K, M, G mean the same).
func parseSize(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("--size %q: want a positive size up to 1TiB, like 64MiB", s)
	}
	return n * mult, nil
}

func formatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}
