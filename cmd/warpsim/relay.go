package main

import (
	"errors"
	"fmt"
	"net/netip"

	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
)

// errPlainRelay is why --plain cannot go through the in-process udpfwd yet:
// a client without an ID needs udpfwd's --zero-id track (issue 12, point 1),
// which this build does not have. Through a udpfwd of your own (--relay)
// that has it, --plain works.
var errPlainRelay = errors.New("--plain through the in-process udpfwd needs its --zero-id track, which this build of udpfwd does not have yet: " +
	"use --direct-only, or --relay ADDR with a udpfwd that runs with --zero-id track")

// startInProcessRelay starts udpfwd in this process, listening on a loopback
// port and forwarding to upstreams (a pool, if several), and returns the
// address clients send to and a function that stops it. udpfwd's own log is
// kept quiet: the demo prints the outcome. A plain client (no ID) needs
// udpfwd's --zero-id track: errPlainRelay until it has one.
func startInProcessRelay(upstreams []netip.AddrPort, plain bool) (netip.AddrPort, func() error, error) {
	if plain {
		return netip.AddrPort{}, nil, errPlainRelay
	}
	c := config.Relay{
		Name:     "warpsim",
		Listen:   []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		Upstream: config.HostPortFrom(upstreams[0]),
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
