package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"text/tabwriter"
	"time"

	"github.com/udpfwd/udpfwd/internal/warptest"
)

// The --kill-endpoint demo: the edge answers on several endpoint addresses,
// udpfwd has them all as a pool, and the endpoint the client's session uses
// goes dark in the middle of a download. The client notices as WireGuard
// does (no reply for 15 s: it hand-shakes again, every 5 s); udpfwd sees
// its initiations go unanswered, marks the endpoint down and moves the
// session to the other endpoint, where the next initiation is answered.
// The TCP connection of the first download lived on a server the client
// may not reach any more, so the demo checks that the client works again
// with a second download, and that a new client goes straight to the
// endpoint that answers.

// recoverTimeout bounds the wait for the client to work again after its
// endpoint went dark: WireGuard's 15 s without replies, then
// failover_after retries 5 s apart, and room for a busy machine.
const recoverTimeout = 40 * time.Second

// failover is what the --kill-endpoint demo showed.
type failover struct {
	relay     string
	id        warptest.ClientID
	endpoints []netip.AddrPort

	setupErr error
	failure  error

	killed      netip.AddrPort // the endpoint that went dark
	killedAt    float64        // how far the download was, in percent
	stopped     bool           // the download stopped when its endpoint went dark
	recovered   bool           // the client completed a handshake again
	workedAfter time.Duration  // from the kill to that handshake
	left        time.Duration  // from the first initiation the dark endpoint swallowed to that handshake
	swallowed   int            // initiations the dark endpoint swallowed
	second      warptest.Result
	secondOK    bool
	newClient   netip.AddrPort // the endpoint a new client's session went to
}

// asExpected: the client worked again through another endpoint, and a new
// client went to a live one.
func (f failover) asExpected() bool {
	return f.setupErr == nil && f.failure == nil && f.stopped && f.recovered && f.secondOK &&
		f.newClient.IsValid() && f.newClient != f.killed
}

// runFailoverDemo runs the --kill-endpoint demo and prints it.
func runFailoverDemo(ctx context.Context, opts options, stdout io.Writer, logf func(string, ...any)) int {
	fmt.Fprintf(stdout, "warpsim: %d WireGuard servers behind %d endpoint addresses; udpfwd has them all as a pool; the endpoint a client's session uses goes dark while it downloads %s\n\n",
		opts.servers, opts.endpoints, formatSize(opts.size))
	f := runFailover(ctx, opts, logf)
	printFailover(stdout, f)
	fmt.Fprintln(stdout)
	if !f.asExpected() {
		fmt.Fprintln(stdout, "result: NOT as expected (see above)")
		return 1
	}
	fmt.Fprintln(stdout, "result: as expected: udpfwd moved the session off the dead endpoint and the client worked again; a new client went straight to a live endpoint")
	return 0
}

// runFailover starts an edge with opts.endpoints endpoints, udpfwd in
// front of it (or uses the one at opts.relay) and a client, and kills the
// client's endpoint a third into its download.
func runFailover(ctx context.Context, opts options, logf func(string, ...any)) (f failover) {
	f.id = clientID(opts)
	edge, err := newEdge(opts, true)
	if err != nil {
		f.setupErr = fmt.Errorf("start the edge: %w", err)
		return f
	}
	defer edge.Close()
	f.endpoints = edge.Endpoints()
	logf("failover: edge endpoints %v", f.endpoints)
	endpoint := opts.relay
	f.relay = "relay at " + opts.relay.String()
	if !opts.relay.IsValid() {
		addr, closeRelay, err := startInProcessRelay(f.endpoints, opts.plain)
		if err != nil {
			f.setupErr = err
			return f
		}
		defer closeRelay()
		endpoint, f.relay = addr, "udpfwd"
	}
	newClient := func(id warptest.ClientID) (*warptest.Client, error) {
		c, err := edge.NewClient(warptest.ClientConfig{ID: id, Endpoint: endpoint})
		if err != nil {
			return nil, fmt.Errorf("start a client: %w", err)
		}
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		defer cancel()
		if err := c.WaitHandshake(hctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("client %s: %w", id, err)
		}
		return c, nil
	}
	client, err := newClient(f.id)
	if err != nil {
		f.setupErr = err
		return f
	}
	defer client.Close()
	routers := edge.Routers()
	dead := -1
	for i, r := range routers {
		if len(r.Sources()) > 0 {
			dead = i
		}
	}
	if dead < 0 {
		f.setupErr = errors.New("no endpoint saw the client's handshake")
		return f
	}
	f.killed = f.endpoints[dead]
	logf("failover: the client's session uses endpoint %v", f.killed)

	tr := client.Download(ctx, opts.size, 1)
	if err := tr.WaitBytes(ctx, opts.size/3, opts.stall); err != nil {
		f.failure = fmt.Errorf("before the endpoint went dark: %w", err)
		return f
	}
	f.killedAt = float64(tr.Bytes()) * 100 / float64(opts.size)
	killedAt := time.Now()
	routers[dead].SetDark(true)
	logf("failover: at %.0f %% endpoint %v went dark", f.killedAt, f.killed)
	_, err = tr.Wait(ctx, opts.stall)
	var stall *warptest.StallError
	f.stopped = errors.As(err, &stall) || err != nil
	tr.Cancel()

	// The client hand-shakes again by itself; udpfwd moves its session.
	deadline := time.Now().Add(recoverTimeout)
	for client.LastHandshake().Before(killedAt) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			f.failure = fmt.Errorf("no handshake within %v after the endpoint went dark", recoverTimeout)
			return f
		}
		time.Sleep(50 * time.Millisecond)
	}
	answered := client.LastHandshake()
	f.recovered, f.workedAfter = true, answered.Sub(killedAt)
	if sw := routers[dead].Swallowed(); len(sw) > 0 {
		f.swallowed, f.left = len(sw), answered.Sub(sw[0])
	}
	logf("failover: the client hand-shook again %v after the endpoint went dark", f.workedAfter.Round(10*time.Millisecond))

	second := client.Download(ctx, opts.size/2, 2)
	if f.second, err = second.Wait(ctx, opts.stall); err != nil {
		f.failure = fmt.Errorf("second download: %w", err)
		return f
	}
	f.secondOK = true

	// A new client: its handshake reaches a live endpoint, never the dark one.
	swallowed := len(routers[dead].Swallowed())
	seen := make([]int, len(routers))
	for i, r := range routers {
		seen[i] = len(r.Sources())
	}
	id := f.id
	id[0] ^= 0xff
	if opts.plain {
		id = warptest.ClientID{}
	}
	c2, err := newClient(id)
	if err != nil {
		f.failure = fmt.Errorf("a new client: %w", err)
		return f
	}
	defer c2.Close()
	for i, r := range routers {
		if len(r.Sources()) > seen[i] && len(routers[dead].Swallowed()) == swallowed {
			f.newClient = f.endpoints[i]
		}
	}
	logf("failover: a new client went to %v", f.newClient)
	return f
}

// printFailover prints what the demo showed.
func printFailover(w io.Writer, f failover) {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	row := func(label, value string) { fmt.Fprintf(tw, "%s\t%s\n", label, value) }
	row("", "through "+orDefault(f.relay, "the relay"))
	row("client ID", idString(f.id))
	row("endpoints", fmt.Sprint(f.endpoints))
	switch {
	case f.setupErr != nil:
		row("download", "did not run (error below)")
	case !f.killed.IsValid():
		row("download", "-")
	default:
		stopped := "went on (?)"
		if f.stopped {
			stopped = "stopped, as its TCP connection lived behind that endpoint"
		}
		row("endpoint went dark", fmt.Sprintf("%v, at %.0f %% of the download: %s", f.killed, f.killedAt, stopped))
	}
	if f.recovered {
		row("worked again after", fmt.Sprintf("%.1f s (WireGuard notices after 15 s, then retries every 5 s)", f.workedAfter.Seconds()))
		row("dead endpoint left", fmt.Sprintf("%.1f s after its first unanswered initiation (%d swallowed)", f.left.Seconds(), f.swallowed))
	}
	if f.secondOK {
		row("second download", fmt.Sprintf("complete, every byte verified (%.0f Mbit/s)", f.second.Mbps()))
	}
	if f.newClient.IsValid() {
		row("new client", fmt.Sprintf("went straight to %v", f.newClient))
	}
	tw.Flush()
	if f.setupErr != nil {
		fmt.Fprintf(w, "\nerror: %v\n", f.setupErr)
	} else if f.failure != nil {
		fmt.Fprintf(w, "\nfailed: %v\n", f.failure)
	}
}

// idString shows a client ID, or says there is none.
func idString(id warptest.ClientID) string {
	if id.IsZero() {
		return "none (plain WireGuard)"
	}
	return id.String()
}
