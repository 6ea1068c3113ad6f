package relay_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/warptest"
)

// End-to-end tests of port sets and endpoint pools: real wireguard-go
// clients and servers (internal/warptest) with udpfwd between them, on
// loopback only.

const (
	// poolBulk is the size of these tests' downloads.
	poolBulk = 16 << 20
	// poolStall: a transfer that should go on and makes no progress this
	// long has stalled (TCP in the userspace stacks needs 1-3.5 s after a
	// change of path, more on a busy machine).
	poolStall = 15 * time.Second
	// poolTimeout bounds each test.
	poolTimeout = 3 * time.Minute
)

// poolEvents records the relay's session and endpoint events.
type poolEvents struct {
	mu  sync.Mutex
	all []any
}

func recordPoolEvents(t *testing.T, r *relay.Relay) *poolEvents {
	t.Helper()
	e := &poolEvents{}
	stream := r.System().EventStream
	sub := stream.Subscribe(func(evt any) {
		switch evt.(type) {
		case messages.SessionEvent, messages.EndpointEvent:
			e.mu.Lock()
			e.all = append(e.all, evt)
			e.mu.Unlock()
		}
	})
	t.Cleanup(func() { stream.Unsubscribe(sub) })
	return e
}

// poolSeen returns the events of type E recorded so far.
func poolSeen[E any](e *poolEvents) []E {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []E
	for _, evt := range e.all {
		if x, ok := evt.(E); ok {
			out = append(out, x)
		}
	}
	return out
}

// poolWait polls cond until it holds or ctx ends.
func poolWait(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// poolRelay starts udpfwd in front of upstreams, listening on listen, with
// edit's changes, and closes it when the test ends.
func poolRelay(t *testing.T, listen []string, upstreams []netip.AddrPort, edit func(*config.Relay)) *relay.Relay {
	t.Helper()
	c := config.Relay{Name: "pools"}
	for _, l := range listen {
		c.Listen = append(c.Listen, netip.MustParseAddrPort(l))
	}
	for i, u := range upstreams {
		if i == 0 {
			c.Upstream = config.HostPortFrom(u)
		} else {
			c.MoreUpstreams = append(c.MoreUpstreams, config.HostPortFrom(u))
		}
	}
	if edit != nil {
		edit(&c)
	}
	f := &config.File{Relays: []config.Relay{c}}
	if _, err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	r, err := relay.Start(f.Relays[0], zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close udpfwd: %v", err)
		}
	})
	return r
}

// poolSession returns the relay's one session of client id.
func poolSession(t *testing.T, r *relay.Relay, id warptest.ClientID) messages.SessionStatus {
	t.Helper()
	l, err := r.Sessions(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range l.Sessions {
		if s.Client == [3]byte(id) {
			return s
		}
	}
	t.Fatalf("no session of client %v among %+v", id, l.Sessions)
	return messages.SessionStatus{}
}

// A client that switches to another of the relay's ports in the middle of a
// download keeps its session and its upstream port (the edge sees one
// source), and its replies leave from the port it uses now.
func TestE2EClientSwitchesRelayPort(t *testing.T) {
	edge, err := warptest.NewEdge(warptest.EdgeConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { edge.Close() })
	r := poolRelay(t, []string{"127.0.0.1:0", "127.0.0.1:0"}, []netip.AddrPort{edge.Addr()}, nil)
	events := recordPoolEvents(t, r)
	ports := r.ListenAddrs()
	if len(ports) != 2 {
		t.Fatalf("udpfwd listens on %v, want two ports", ports)
	}
	id := warptest.ClientID{0x90, 0x27, 0x08}
	c, err := edge.NewClient(warptest.ClientConfig{ID: id, Endpoint: ports[0], KeepEndpoint: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), poolTimeout)
	defer cancel()
	if err := c.WaitHandshake(ctx); err != nil {
		t.Fatal(err)
	}
	before := poolSession(t, r, id)

	tr := c.Download(ctx, poolBulk, 12)
	if err := tr.WaitBytes(ctx, poolBulk/3, poolStall); err != nil {
		t.Fatal(err)
	}
	if err := c.SetEndpoint(ports[1]); err != nil {
		t.Fatal(err)
	}
	res, err := tr.Wait(ctx, poolStall)
	if err != nil {
		t.Fatalf("download after switching relay ports: %v", err)
	}
	t.Logf("%d bytes in %v (%.0f Mbit/s), switching from %v to %v at a third", res.Bytes, res.Elapsed, res.Mbps(), ports[0], ports[1])

	after := poolSession(t, r, id)
	if after.Session != before.Session || after.UpstreamLocal != before.UpstreamLocal {
		t.Errorf("session %v on upstream port %v became %v on %v: want the same", before.Session, before.UpstreamLocal, after.Session, after.UpstreamLocal)
	}
	if src := edge.Router().Sources(); len(src) != 1 {
		t.Errorf("the edge saw sources %v, want only the session's one", src)
	}
	from := c.Bind().ReceivedFrom()
	if from[ports[0]] == 0 || from[ports[1]] == 0 || c.Bind().LastFrom() != ports[1] {
		t.Errorf("replies by source %v, last from %v: want replies from both ports, the last from %v", from, c.Bind().LastFrom(), ports[1])
	}
	if roamed := poolSeen[*messages.ClientRoamed](events); len(roamed) == 0 {
		t.Error("the switch of ports was not a roam of the session")
	}
	if opened := poolSeen[*messages.SessionOpened](events); len(opened) != 1 {
		t.Errorf("%d sessions opened, want 1", len(opened))
	}
}

// An endpoint of the pool goes dark in the middle of a download: the
// client's handshakes go unanswered, its session moves to the other
// endpoint on a new upstream socket, and the client works again; a new
// client goes straight to the endpoint that answers. How long the dead
// endpoint took to leave, from its first unanswered initiation to the
// first one answered by the other, is logged.
func TestE2EEndpointGoesDark(t *testing.T) {
	edge, err := warptest.NewEdge(warptest.EdgeConfig{Servers: 2, Endpoints: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { edge.Close() })
	eps := edge.Endpoints()
	r := poolRelay(t, []string{"127.0.0.1:0"}, eps, nil)
	events := recordPoolEvents(t, r)
	relayAddr := r.ListenAddrs()[0]
	newClient := func(id warptest.ClientID) *warptest.Client {
		c, err := edge.NewClient(warptest.ClientConfig{ID: id, Endpoint: relayAddr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), poolTimeout)
	defer cancel()

	id1 := warptest.ClientID{0xde, 0xad, 0x01}
	c1 := newClient(id1)
	if err := c1.WaitHandshake(ctx); err != nil {
		t.Fatal(err)
	}
	first := poolSession(t, r, id1)
	if first.Endpoint != eps[0].String() || first.Upstream != eps[0] {
		t.Fatalf("the first session is on %s (%v), want the first endpoint %v", first.Endpoint, first.Upstream, eps[0])
	}
	tr := c1.Download(ctx, poolBulk, 13)
	if err := tr.WaitBytes(ctx, poolBulk/4, poolStall); err != nil {
		t.Fatal(err)
	}

	// The first endpoint goes dark. The client notices as WireGuard does
	// (here at once, rather than after its 15 s without replies) and
	// hand-shakes again, every 5 s while unanswered.
	edge.Routers()[0].SetDark(true)
	if err := c1.Rehandshake(ctx); err != nil {
		t.Fatalf("no handshake after the endpoint went dark: %v", err)
	}
	answered := c1.LastHandshake()
	tr.Cancel()
	swallowed := edge.Routers()[0].Swallowed()
	if len(swallowed) == 0 {
		t.Fatal("the dark endpoint swallowed no initiation")
	}
	t.Logf("the dead endpoint was left %v after its first unanswered initiation (%d initiations swallowed, failover_after %d)",
		answered.Sub(swallowed[0]).Round(10*time.Millisecond), len(swallowed), config.DefaultFailoverAfter)

	moved := poolSeen[*messages.SessionMoved](events)
	if len(moved) != 1 || moved[0].Client != [3]byte(id1) || moved[0].FromEndpoint != eps[0].String() ||
		moved[0].Endpoint != eps[1].String() || moved[0].Session != first.Session {
		t.Fatalf("sessions moved: %+v; want the client's, from %v to %v", moved, eps[0], eps[1])
	}
	if down := poolSeen[*messages.EndpointDown](events); len(down) != 1 || down[0].Endpoint != eps[0].String() {
		t.Fatalf("endpoints down: %+v; want %v", down, eps[0])
	}
	now := poolSession(t, r, id1)
	if now.Session != first.Session || now.Upstream != eps[1] || now.Endpoint != eps[1].String() || now.UpstreamLocal == first.UpstreamLocal {
		t.Errorf("after the move the session is %v on %s (%v) from %v; want %v on %v from a new socket (was %v)",
			now.Session, now.Endpoint, now.Upstream, now.UpstreamLocal, first.Session, eps[1], first.UpstreamLocal)
	}
	if err := c1.Echo(ctx, []byte("works again through the other endpoint")); err != nil {
		t.Fatalf("the client after the move: %v", err)
	}

	// A new client goes straight to the endpoint that answers.
	id2 := warptest.ClientID{0xde, 0xad, 0x02}
	c2 := newClient(id2)
	if err := c2.WaitHandshake(ctx); err != nil {
		t.Fatal(err)
	}
	if s := poolSession(t, r, id2); s.Endpoint != eps[1].String() || s.Upstream != eps[1] {
		t.Errorf("the new client's session is on %s (%v), want %v", s.Endpoint, s.Upstream, eps[1])
	}
	if err := c2.Echo(ctx, []byte("a new client")); err != nil {
		t.Fatal(err)
	}
	if n := len(poolSeen[*messages.SessionMoved](events)); n != 1 {
		t.Errorf("%d sessions moved, want only the first client's", n)
	}

	// The metrics say so.
	var st0, st1 *metricsEndpoint
	for _, e := range r.MetricsStatus().Endpoints() {
		switch e.Endpoint {
		case eps[0].String():
			st0 = &metricsEndpoint{e.Up, e.Sessions, e.Failovers, e.Unanswered}
		case eps[1].String():
			st1 = &metricsEndpoint{e.Up, e.Sessions, e.Failovers, e.Unanswered}
		}
	}
	if st0 == nil || st1 == nil || st0.up || st0.failovers != 1 || st0.sessions != 0 || st0.unanswered < 2 ||
		!st1.up || st1.sessions != 2 || st1.failovers != 0 {
		t.Errorf("endpoint metrics %+v, %+v", st0, st1)
	}
}

// metricsEndpoint is what the test checks of an endpoint's metrics.
type metricsEndpoint struct {
	up                    bool
	sessions              int
	failovers, unanswered uint64
}
