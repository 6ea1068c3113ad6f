package warptest

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

// Roaming tests call a transfer stalled after it made no progress for:
const (
	// stallAfter, for a transfer that should survive: well above the 1-3.5 s
	// that TCP in the userspace stacks needs to recover after a roam, with
	// room for a busy machine.
	stallAfter = 10 * time.Second
	// directStall, for one that should not: well below the 15 s after which
	// wireguard-go starts a new handshake by itself.
	directStall = 3 * time.Second
)

// toAnotherServer accepts a new local address of c that the router hashes to
// another server than c's current one: what nearly always happens on WARP,
// with its many servers, when a phone changes networks.
func toAnotherServer(r *Router, c *Client) func(netip.AddrPort) bool {
	from := r.ServerFor(c.LocalAddr())
	return func(a netip.AddrPort) bool { return r.ServerFor(a) != from }
}

func TestRoamingDirectStalls(t *testing.T) {
	e := newEdge(t, 3)
	c := newClient(t, e, ClientConfig{ID: ClientID{1, 2, 3}})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := c.WaitHandshake(ctx); err != nil {
		t.Fatal(err)
	}
	before := c.LocalAddr()
	tr := c.Download(ctx, bulkSize, 2)
	if err := tr.WaitBytes(ctx, bulkSize/4, stallAfter); err != nil {
		t.Fatal(err)
	}
	after, err := c.Roam(toAnotherServer(e.Router(), c))
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.Wait(ctx, directStall)
	var stall *StallError
	if !errors.As(err, &stall) {
		t.Fatalf("download after roaming straight to the router: got %v, want a stall", err)
	}
	t.Logf("%v", stall)
	if stall.Bytes >= bulkSize {
		t.Errorf("stalled at %d of %d bytes: that is not a stall", stall.Bytes, bulkSize)
	}
	src := e.Router().Sources()
	if src[before].Server == src[after].Server || src[after].Datagrams == 0 {
		t.Errorf("router saw %v: want %v and %v on two servers", src, before, after)
	}
}

func TestRoamingThroughRelaySurvives(t *testing.T) {
	e := newEdge(t, 3)
	relay := newTestRelay(t, e.Addr())
	c := newClient(t, e, ClientConfig{ID: ClientID{4, 5, 6}, Endpoint: relay.addr()})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := c.WaitHandshake(ctx); err != nil {
		t.Fatal(err)
	}
	const roams = 3
	tr := c.Download(ctx, bulkSize, 3)
	ports := map[uint16]bool{c.LocalAddr().Port(): true}
	for i := 1; i <= roams; i++ {
		if err := tr.WaitBytes(ctx, bulkSize*int64(i)/(roams+1), stallAfter); err != nil {
			t.Fatal(err)
		}
		a, err := c.Roam(toAnotherServer(e.Router(), c))
		if err != nil {
			t.Fatal(err)
		}
		ports[a.Port()] = true
	}
	res, err := tr.Wait(ctx, stallAfter)
	if err != nil {
		t.Fatalf("download through the relay with %d roams: %v", roams, err)
	}
	t.Logf("%d bytes in %v (%.0f Mbit/s) over %d local ports", res.Bytes, res.Elapsed, res.Mbps(), len(ports))
	if len(ports) != roams+1 {
		t.Errorf("client used %d local ports, want %d", len(ports), roams+1)
	}
	if src := e.Router().Sources(); len(src) != 1 {
		t.Errorf("router saw sources %v, want only the relay's one", src)
	}
}
