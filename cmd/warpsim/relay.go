package main

import (
	"errors"
	"fmt"
	"net/netip"

	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
)

// startInProcessRelay starts udpfwd in this process, listening on a loopback
// port and forwarding to upstreams (a pool, if several), and returns the
// address clients send to and a function that stops it. udpfwd's own log is
// kept quiet: the demo prints the outcome. For a plain client (no ID) it
// runs with --zero-id track, which follows such a client by the indexes of
// its handshakes.
func startInProcessRelay(upstreams []netip.AddrPort, plain bool) (netip.AddrPort, func() error, error) {
	c := config.Relay{
		Name:     "warpsim",
		Listen:   []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		Upstream: config.HostPortFrom(upstreams[0]),
	}
	if plain {
		c.ZeroID = config.ZeroIDTrack
	}
	for _, u := range upstreams[1:] {
		c.MoreUpstreams = append(c.MoreUpstreams, config.HostPortFrom(u))
	}
	f := &config.File{Relays: []config.Relay{c}}
	if _, err := f.Validate(); err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("udpfwd config: %w", err)
	}
	r, err := relay.Start(f.Relays[0], zap.NewNop())
	if err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("start udpfwd: %w", err)
	}
	addrs := r.ListenAddrs()
	if len(addrs) != 1 {
		r.Close()
		return netip.AddrPort{}, nil, errors.New("udpfwd started without its listening address")
	}
	return addrs[0], r.Close, nil
}
