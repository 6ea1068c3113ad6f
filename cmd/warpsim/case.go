package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"

	"github.com/udpfwd/udpfwd/internal/warptest"
)

// outcome is what one case (through the relay, or direct) showed.
type outcome struct {
	viaRelay bool
	relay    string // which relay, for the relay case
	id       warptest.ClientID

	setupErr error                // the case could not run
	result   warptest.Result      // the download completed
	stall    *warptest.StallError // the download stalled
	failure  error                // the download failed otherwise
	complete bool                 // the download completed, every byte verified
	roams    int                  // port changes made
	sources  map[netip.AddrPort]warptest.SourceStat
	servers  int // servers the router hashed the client's datagrams to
	total    int // servers behind the router
}

// asExpected: through a relay the download completes, straight to the edge
// it stalls.
func (o outcome) asExpected() bool {
	if o.viaRelay {
		return o.complete
	}
	return o.stall != nil
}

// runCase starts an edge (and the relay, in the relay case) and a client that
// downloads opts.size bytes, changing its local port opts.roams times at even
// points of the download.
func runCase(ctx context.Context, opts options, viaRelay bool, logf func(string, ...any)) (o outcome) {
	o.viaRelay = viaRelay
	name := "direct"
	if viaRelay {
		name = "relay"
	}
	if _, err := rand.Read(o.id[:]); err != nil || o.id.IsZero() {
		o.id = warptest.ClientID{0xa8, 0x1a, 0x15}
	}

	edgeAddr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0)
	if viaRelay {
		edgeAddr = opts.edge
	}
	edge, err := warptest.NewEdge(warptest.EdgeConfig{Servers: opts.servers, Addr: edgeAddr})
	if err != nil {
		o.setupErr = fmt.Errorf("start the edge: %w", err)
		return o
	}
	defer edge.Close()
	o.total = opts.servers
	logf("%s: edge router at %v", name, edge.Addr())

	endpoint := edge.Addr()
	if viaRelay {
		if opts.relay.IsValid() {
			endpoint = opts.relay
			o.relay = "relay at " + opts.relay.String()
		} else {
			addr, closeRelay, err := startInProcessRelay(edge.Addr())
			if err != nil {
				o.setupErr = err
				return o
			}
			defer closeRelay()
			endpoint = addr
			o.relay = "udpfwd"
		}
		logf("%s: client sends to %v", name, endpoint)
	}

	client, err := edge.NewClient(warptest.ClientConfig{ID: o.id, Endpoint: endpoint})
	if err != nil {
		o.setupErr = fmt.Errorf("start the client: %w", err)
		return o
	}
	defer client.Close()
	defer func() {
		o.roams = client.Roams()
		o.sources = edge.Router().Sources()
		o.servers = edge.Router().ServersTouched()
	}()

	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	err = client.WaitHandshake(hctx)
	cancel()
	if err != nil {
		o.setupErr = fmt.Errorf("client %s from %v: %w", o.id, client.LocalAddr(), err)
		return o
	}
	logf("%s: handshake done, client %s at %v", name, o.id, client.LocalAddr())

	tr := client.Download(ctx, opts.size, 1)
	for i := 1; i <= opts.roams; i++ {
		point := opts.size * int64(i) / int64(opts.roams+1)
		if err := tr.WaitBytes(ctx, point, opts.stall); err != nil {
			o.classify(err)
			return o
		}
		router := edge.Router()
		from := router.ServerFor(client.LocalAddr())
		// A port the router hashes to another server: with WARP's many
		// servers that is what a network change nearly always brings.
		addr, err := client.Roam(func(a netip.AddrPort) bool { return router.ServerFor(a) != from })
		if err != nil {
			tr.Cancel()
			o.failure = fmt.Errorf("roam: %w", err)
			return o
		}
		logf("%s: at %d %% the client moved to %v", name, point*100/opts.size, addr)
	}
	res, err := tr.Wait(ctx, opts.stall)
	if err != nil {
		o.classify(err)
		return o
	}
	o.result, o.complete = res, true
	logf("%s: download complete", name)
	return o
}

func (o *outcome) classify(err error) {
	if !errors.As(err, &o.stall) {
		o.failure = err
	}
}
