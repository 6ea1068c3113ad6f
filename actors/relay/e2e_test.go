package relay_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/warptest"
)

// End-to-end tests: real wireguard-go clients and servers (internal/warptest)
// with udpfwd between them, on loopback only.

// e2eSize is the size of the bulk transfers: at least 16 MiB, as the issue
// asks, and still a few seconds under the race detector.
const e2eSize = 16 << 20

// e2eStall: a transfer that makes no progress this long has stalled. It is
// well above the 1-3.5 s TCP in the userspace stacks needs after a roam,
// with room for a loaded machine, and below the 15 s after which
// wireguard-go re-handshakes by itself (which would hide a relay that lost
// track of a roamed client).
const e2eStall = 10 * time.Second

// e2eTimeout bounds a whole end-to-end test. Stalls are caught by e2eStall;
// this only ends a test that hangs, so it leaves a slow machine all the
// time a transfer needs.
const e2eTimeout = 3 * time.Minute

// bed is an edge with udpfwd in front of it.
type bed struct {
	edge   *warptest.Edge
	relay  *relay.Relay
	addr   netip.AddrPort // udpfwd's listening address
	events *events        // udpfwd's session events
}

// newBed starts an edge with the tunnel MTU mtu (zero: WARP's 1280) and
// udpfwd with the idle timeout idle (zero: its default) in front of it.
func newBed(t *testing.T, idle time.Duration, mtu int) *bed {
	t.Helper()
	return newBedWith(t, idle, mtu, nil)
}

// newBedWith is newBed with udpfwd's security settings, which sec (if not
// nil) chooses once the edge, and so its public key, exists.
func newBedWith(t *testing.T, idle time.Duration, mtu int, sec func(*warptest.Edge) config.Security) *bed {
	t.Helper()
	return newBedConfig(t, idle, mtu, func(e *warptest.Edge, c *config.Relay) {
		if sec != nil {
			c.Security = sec(e)
		}
	})
}

// newBedConfig is newBed with udpfwd's configuration changed by edit (if
// not nil) once the edge exists.
func newBedConfig(t *testing.T, idle time.Duration, mtu int, edit func(*warptest.Edge, *config.Relay)) *bed {
	t.Helper()
	// Registered first, so it runs after every other cleanup. The actor
	// system's dead-letter log throttle keeps a goroutine for a second
	// after a dead letter; it ends by itself.
	t.Cleanup(func() {
		goleak.VerifyNone(t, goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
	})
	edge, err := warptest.NewEdge(warptest.EdgeConfig{MTU: mtu})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { edge.Close() })
	cfg := relayConfig(t, edge.Addr(), func(c *config.Relay) {
		c.IdleTimeout = idle
		if edit != nil {
			edit(edge, c)
		}
	}, "127.0.0.1:0")
	r, err := relay.Start(cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close udpfwd: %v", err)
		}
	})
	addrs := r.ListenAddrs()
	if len(addrs) != 1 {
		t.Fatalf("udpfwd listens on %v, want one address", addrs)
	}
	return &bed{edge: edge, relay: r, addr: addrs[0], events: watchEvents(t, r)}
}

// client starts a client of the bed's edge that sends through udpfwd.
func (b *bed) client(t *testing.T, id warptest.ClientID) *warptest.Client {
	t.Helper()
	c, err := b.edge.NewClient(warptest.ClientConfig{ID: id, Endpoint: b.addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// handshake waits for c's handshake through udpfwd.
func handshake(t *testing.T, ctx context.Context, c *warptest.Client) {
	t.Helper()
	hctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	if err := c.WaitHandshake(hctx); err != nil {
		t.Fatalf("client %s: %v", c.ID(), err)
	}
}

func TestE2EHandshakeAndBulkTransfer(t *testing.T) {
	b := newBed(t, 0, 0)
	c := b.client(t, warptest.ClientID{0xa8, 0x1a, 0x15})
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	handshake(t, ctx, c)
	for i, tr := range []*warptest.Transfer{c.Download(ctx, e2eSize, 1), c.Upload(ctx, e2eSize, 2)} {
		res, err := tr.Wait(ctx, e2eStall)
		if err != nil {
			t.Fatalf("transfer %d: %v", i, err)
		}
		t.Logf("%s through udpfwd: %d bytes verified in %v, %.0f Mbit/s", tr.Kind(), res.Bytes, res.Elapsed, res.Mbps())
	}
	if n := count[*messages.SessionOpened](b.events); n != 1 {
		t.Errorf("udpfwd opened %d sessions, want 1", n)
	}
	if got := c.Bind().Foreign(); got != 0 {
		t.Errorf("%d replies reached the client without its ID in bytes 1..3", got)
	}
}

// TestE2EFullSizeDatagramsAtMTU1420: with WireGuard's usual MTU of 1420
// (users change WARP's 1280 to it), a full-size packet becomes a transport
// datagram of 1452 bytes, not a multiple of 16, since WireGuard never pads
// past the MTU. udpfwd must pass it.
func TestE2EFullSizeDatagramsAtMTU1420(t *testing.T) {
	b := newBed(t, 0, 1420)
	c := b.client(t, warptest.ClientID{0x14, 0x20, 0x00})
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	handshake(t, ctx, c)
	for i, tr := range []*warptest.Transfer{c.Upload(ctx, e2eSize, 4), c.Download(ctx, e2eSize, 5)} {
		res, err := tr.Wait(ctx, e2eStall)
		if err != nil {
			t.Fatalf("transfer %d at MTU 1420: %v (udpfwd dropped %d datagrams as %s)",
				i, err, b.relay.Counters().Dropped(stats.BadSize), stats.BadSize)
		}
		t.Logf("%s at MTU 1420: %d bytes verified in %v, %.0f Mbit/s", tr.Kind(), res.Bytes, res.Elapsed, res.Mbps())
	}
	if got := b.relay.Counters().TotalDropped(); got != 0 {
		t.Errorf("udpfwd dropped %d datagrams", got)
	}
}

func TestE2ERoamingDuringDownload(t *testing.T) {
	b := newBed(t, 0, 0)
	c := b.client(t, warptest.ClientID{0x01, 0x02, 0x03})
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	handshake(t, ctx, c)
	router := b.edge.Router()

	const roams = 3
	tr := c.Download(ctx, e2eSize, 3)
	ports := map[netip.AddrPort]bool{c.LocalAddr(): true}
	for i := 1; i <= roams; i++ {
		if err := tr.WaitBytes(ctx, e2eSize*int64(i)/(roams+1), e2eStall); err != nil {
			t.Fatal(err)
		}
		// A port that would reach another server if the client sent to
		// the router itself.
		from := router.ServerFor(c.LocalAddr())
		a, err := c.Roam(func(a netip.AddrPort) bool { return router.ServerFor(a) != from })
		if err != nil {
			t.Fatal(err)
		}
		ports[a] = true
	}
	res, err := tr.Wait(ctx, e2eStall)
	if err != nil {
		t.Fatalf("download with %d roams through udpfwd: %v", roams, err)
	}
	t.Logf("%d bytes verified in %v (%.0f Mbit/s) from %d client ports", res.Bytes, res.Elapsed, res.Mbps(), len(ports))
	if len(ports) != roams+1 {
		t.Errorf("client used %d ports, want %d", len(ports), roams+1)
	}
	src := router.Sources()
	if len(src) != 1 {
		t.Fatalf("router saw %d source addresses %v, want udpfwd's one upstream port", len(src), src)
	}
	for addr, st := range src {
		sent := b.relay.Counters().Datagrams(stats.ToUpstream)
		if st.Datagrams == 0 || st.Datagrams > sent {
			t.Errorf("router got %d datagrams from %v, udpfwd sent %d upstream", st.Datagrams, addr, sent)
		}
	}
	if n := count[*messages.ClientRoamed](b.events); n < roams {
		t.Errorf("udpfwd reported %d roams, want at least %d", n, roams)
	}
}

func TestE2ETwoClients(t *testing.T) {
	b := newBed(t, 0, 0)
	ids := []warptest.ClientID{{0x10, 0x20, 0x30}, {0x40, 0x50, 0x60}}
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	var transfers []*warptest.Transfer
	for i, id := range ids {
		c := b.client(t, id)
		handshake(t, ctx, c)
		transfers = append(transfers, c.Download(ctx, e2eSize, uint64(10+i)))
	}
	for i, tr := range transfers {
		if _, err := tr.Wait(ctx, e2eStall); err != nil {
			t.Errorf("client %s: %v", ids[i], err)
		}
	}
	src := b.edge.Router().Sources()
	if len(src) != len(ids) {
		t.Errorf("router saw source addresses %v, want %d (one udpfwd port per client ID)", src, len(ids))
	}
	if n := count[*messages.SessionOpened](b.events); n != len(ids) {
		t.Errorf("udpfwd opened %d sessions, want %d", n, len(ids))
	}
}

// A plain WireGuard client (client ID zero) gets nothing through udpfwd:
// every handshake initiation it sends is dropped and counted, and neither
// it nor the edge sees a datagram.
func TestE2EZeroClientIDDropped(t *testing.T) {
	b := newBed(t, 0, 0)
	c := b.client(t, warptest.ClientID{})
	k := b.relay.Counters()
	ctx, cancel := context.WithCancel(context.Background())
	handshook := make(chan error, 1)
	go func() { handshook <- c.WaitHandshake(ctx) }() // it asks for a handshake, and waits
	eventually(t, "the client to send its handshake", func() bool { return c.Bind().Sent() > 0 })
	sent := c.Bind().Sent()
	eventually(t, "udpfwd to drop what the client sent", func() bool { return k.Dropped(stats.ZeroClientID) >= sent },
		func() string {
			return fmt.Sprintf("%d of %d dropped as %s", k.Dropped(stats.ZeroClientID), sent, stats.ZeroClientID)
		})
	cancel()
	if err := <-handshook; err == nil {
		t.Error("the client with ID 0 completed a handshake through udpfwd")
	}
	if got := c.Bind().Received(); got != 0 {
		t.Errorf("client received %d datagrams", got)
	}
	if src := b.edge.Router().Sources(); len(src) != 0 {
		t.Errorf("router saw %v, want nothing", src)
	}
	if got, zero := k.TotalDropped(), k.Dropped(stats.ZeroClientID); got != zero {
		t.Errorf("udpfwd dropped %d datagrams, %d of them as %s: want no other drops", got, zero, stats.ZeroClientID)
	}
}

// A session that expires while its client is quiet is replaced, on a new
// upstream port, by the client's next handshake, and traffic flows again.
func TestE2EIdleExpiry(t *testing.T) {
	// Long enough that the echo right after the handshake reaches the
	// session before it expires, with room for a busy machine.
	const idle = 2 * time.Second
	b := newBed(t, idle, 0)
	c := b.client(t, warptest.ClientID{0x77, 0x88, 0x99})
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	handshake(t, ctx, c)
	if err := c.Echo(ctx, []byte("before the session expires")); err != nil {
		t.Fatal(err)
	}
	router := b.edge.Router()
	before := router.Sources()
	if len(before) != 1 {
		t.Fatalf("router saw %v, want one source", before)
	}

	await[*messages.SessionExpired](t, b.events)

	// The client's keys are older than WireGuard's two minutes after any
	// real idle timeout, so its next send starts a handshake; Rehandshake
	// does that now. The new session's port may hash to another server,
	// which only a new handshake reaches.
	if err := c.Rehandshake(ctx); err != nil {
		t.Fatalf("re-handshake after expiry: %v", err)
	}
	if err := c.Echo(ctx, []byte("after the session expired")); err != nil {
		t.Fatal(err)
	}
	after := router.Sources()
	if len(after) != 2 {
		t.Fatalf("router saw %v, want the old and a new udpfwd port", after)
	}
	for addr, st := range after {
		if _, old := before[addr]; !old && st.Datagrams == 0 {
			t.Errorf("new source %v passed no datagrams", addr)
		}
	}
	if n := count[*messages.SessionOpened](b.events); n != 2 {
		t.Errorf("udpfwd opened %d sessions, want 2", n)
	}
}
