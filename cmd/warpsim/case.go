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
	o.id = clientID(opts)
	edge, err := newEdge(opts, viaRelay)
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
			addr, closeRelay, err := startInProcessRelay(edge.Endpoints(), opts.plain)
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

// clientID is a random client ID, or the zero ID of a plain client.
func clientID(opts options) warptest.ClientID {
	var id warptest.ClientID
	if opts.plain {
		return id
	}
	if _, err := rand.Read(id[:]); err != nil || id.IsZero() {
		id = warptest.ClientID{0xa8, 0x1a, 0x15}
	}
	return id
}

// newEdge starts the edge of a case: on opts.edge's addresses in the relay
// case (a running relay's upstreams), on ports the system picks otherwise.
func newEdge(opts options, viaRelay bool) (*warptest.Edge, error) {
	cfg := warptest.EdgeConfig{Servers: opts.servers, Endpoints: opts.endpoints}
	if viaRelay {
		cfg.EndpointAddrs = opts.edge
	}
	return warptest.NewEdge(cfg)
}

func (o *outcome) classify(err error) {
	if !errors.As(err, &o.stall) {
		o.failure = err
	}
}
