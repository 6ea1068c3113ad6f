package relay_test

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
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
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Plain WireGuard clients through udpfwd (zero_id: track), end to end: real
// wireguard-go clients that send the zero client ID and, like the Linux
// kernel, drop replies whose reserved bytes are not zero (internal/warptest),
// in front of the fake WARP edge.

const (
	// plainSize is each bulk transfer: 16 MiB, as the other end-to-end
	// tests move.
	plainSize = 16 << 20
	// plainStall: a transfer without progress this long has stalled (see
	// e2eStall: above what TCP in the userspace stacks needs after a roam
	// on a loaded machine, below wireguard-go's own re-handshake at 15 s).
	plainStall = 10 * time.Second
	// plainTimeout bounds a whole test; stalls are caught by plainStall.
	plainTimeout = 3 * time.Minute
)

// plainBed is the edge with udpfwd in front of it, configured by edit.
type plainBed struct {
	edge   *warptest.Edge
	relay  *relay.Relay
	addr   netip.AddrPort
	events *events
}

func newPlainBed(t *testing.T, edit func(*config.Relay)) *plainBed {
	t.Helper()
	t.Cleanup(func() {
		goleak.VerifyNone(t, goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
	})
	edge, err := warptest.NewEdge(warptest.EdgeConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { edge.Close() })
	cfg := relayConfig(t, edge.Addr(), func(c *config.Relay) {
		c.ZeroID = config.ZeroIDTrack
		c.Security.UpstreamPublicKey = config.PublicKey(edge.PublicKey())
		if edit != nil {
			edit(c)
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
	b := &plainBed{edge: edge, relay: r, addr: r.ListenAddrs()[0], events: watchEvents(t, r)}
	return b
}

// client starts a plain WireGuard client (client ID zero) that sends
// through udpfwd.
func (b *plainBed) client(t *testing.T) *warptest.Client {
	t.Helper()
	c, err := b.edge.NewClient(warptest.ClientConfig{Endpoint: b.addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recorded returns the events of type T recorded so far.
func recorded[T any](e *events) []T {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []T
	for _, evt := range e.all {
		if v, ok := evt.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// forger sends transport messages with the zero client ID and random
// receiver indexes to the relay from a socket of its own, as an off-path
// attacker who knows a plain client is there would, until stopped.
type forger struct {
	conn *net.UDPConn
	sent int
	got  int
	done chan struct{}
	stop chan struct{}
}

func startForger(t *testing.T, to netip.AddrPort) *forger {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	f := &forger{conn: c, done: make(chan struct{}), stop: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Go(func() { // what comes back: nothing should
		buf := make([]byte, 2048)
		for {
			if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
			f.got++
		}
	})
	go func() {
		defer close(f.done)
		rng := rand.New(rand.NewPCG(1, 2))
		msg := make([]byte, 96)
		msg[0] = byte(wgproto.TypeTransport)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
			binary.LittleEndian.PutUint32(msg[4:], rng.Uint32())
			binary.LittleEndian.PutUint64(msg[8:], rng.Uint64())
			if _, err := c.WriteToUDPAddrPort(msg, to); err == nil {
				f.sent++
			}
		}
	}()
	t.Cleanup(func() { f.halt(); c.Close(); wg.Wait() })
	return f
}

func (f *forger) addr() netip.AddrPort { return f.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// halt stops sending; it returns how many were sent.
func (f *forger) halt() int {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	<-f.done
	return f.sent
}

// A plain client downloads through udpfwd while it changes its UDP port
// three times: the edge sees one source port throughout (one upstream port,
// so one WARP server), and the relay follows the client by the index the
// upstream assigned. A forger sending transport messages with random
// indexes from another address meanwhile gets nothing and moves nothing.
func TestE2EPlainClientRoams(t *testing.T) {
	b := newPlainBed(t, nil)
	c := b.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), plainTimeout)
	defer cancel()
	handshake(t, ctx, c)
	router := b.edge.Router()
	f := startForger(t, b.addr)

	const roams = 3
	tr := c.Download(ctx, plainSize, 31)
	ports := map[netip.AddrPort]bool{c.LocalAddr(): true}
	for i := 1; i <= roams; i++ {
		if err := tr.WaitBytes(ctx, plainSize*int64(i)/(roams+1), plainStall); err != nil {
			t.Fatal(err)
		}
		from := router.ServerFor(c.LocalAddr())
		a, err := c.Roam(func(a netip.AddrPort) bool { return router.ServerFor(a) != from })
		if err != nil {
			t.Fatal(err)
		}
		ports[a] = true
	}
	res, err := tr.Wait(ctx, plainStall)
	if err != nil {
		t.Fatalf("plain client's download with %d roams through udpfwd: %v", roams, err)
	}
	t.Logf("%d bytes verified in %v (%.0f Mbit/s) from %d client ports", res.Bytes, res.Elapsed, res.Mbps(), len(ports))
	sent := f.halt()

	k := b.relay.Counters()
	if len(ports) != roams+1 {
		t.Errorf("client used %d ports, want %d", len(ports), roams+1)
	}
	if src := router.Sources(); len(src) != 1 {
		t.Errorf("router saw source addresses %v, want udpfwd's one upstream port", src)
	}
	if n := len(recorded[*messages.SessionOpened](b.events)); n != 1 {
		t.Errorf("udpfwd opened %d sessions, want 1", n)
	}
	moves := recorded[*messages.ClientRoamed](b.events)
	if len(moves) < roams {
		t.Errorf("udpfwd reported %d roams, want at least %d", len(moves), roams)
	}
	for _, m := range moves {
		if m.ClientAddr == f.addr() {
			t.Errorf("the session moved to the forger's address %v", m.ClientAddr)
		}
		if !m.Client.IsZero() {
			t.Errorf("a plain session reported client ID %v", m.Client)
		}
	}
	if sent == 0 {
		t.Fatal("the forger sent nothing: the test shows nothing")
	}
	// Every forged datagram is dropped where it arrives: none reaches the
	// session, the upstream, or (so) the forger.
	eventually(t, "every forged datagram to be dropped", func() bool { return k.Dropped(stats.ZeroIDUnknownIndex) >= uint64(sent) })
	if got := k.Dropped(stats.ZeroIDUnknownIndex); got != uint64(sent) {
		t.Errorf("%d datagrams dropped as %s, the forger sent %d", got, stats.ZeroIDUnknownIndex, sent)
	}
	if f.got != 0 {
		t.Errorf("the forger received %d datagrams", f.got)
	}
	if got := c.Bind().Foreign(); got != 0 {
		t.Errorf("%d replies reached the plain client with non-zero reserved bytes", got)
	}
}

// Two plain clients behind one address (two source ports, as behind one
// NAT) are two sessions, on two upstream ports.
func TestE2ETwoPlainClients(t *testing.T) {
	b := newPlainBed(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), plainTimeout)
	defer cancel()
	var transfers []*warptest.Transfer
	var clients []*warptest.Client
	for i := range 2 {
		c := b.client(t)
		handshake(t, ctx, c)
		clients = append(clients, c)
		transfers = append(transfers, c.Download(ctx, plainSize/2, uint64(40+i)))
	}
	for i, tr := range transfers {
		if _, err := tr.Wait(ctx, plainStall); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	if src := b.edge.Router().Sources(); len(src) != 2 {
		t.Errorf("router saw source addresses %v, want two (one udpfwd port per plain client)", src)
	}
	opened := recorded[*messages.SessionOpened](b.events)
	if len(opened) != 2 {
		t.Fatalf("udpfwd opened %d sessions, want 2", len(opened))
	}
	if opened[0].UpstreamLocal == opened[1].UpstreamLocal || opened[0].ClientAddr == opened[1].ClientAddr {
		t.Errorf("sessions %+v and %+v share an address", opened[0].SessionInfo, opened[1].SessionInfo)
	}
	for _, c := range clients {
		if c.LocalAddr().Addr() != clients[0].LocalAddr().Addr() {
			t.Fatalf("clients on %v and %v: want one address", clients[0].LocalAddr(), c.LocalAddr())
		}
	}
}

// With stamp_client_id, what a plain client sends reaches the edge with the
// ID in bytes 1..3 (the edge's servers check mac1 with those bytes zeroed,
// as WARP does, so the handshake completes), and the edge's replies, which
// carry the ID back, reach the client with the bytes zeroed: wireguard-go
// drops them otherwise, and the transfer could not complete.
func TestE2EStampedPlainClient(t *testing.T) {
	stamp := wgproto.ClientID{0xa8, 0x1a, 0x15}
	b := newPlainBed(t, func(c *config.Relay) { c.StampClientID = stamp })
	c := b.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), plainTimeout)
	defer cancel()
	handshake(t, ctx, c)
	for i, tr := range []*warptest.Transfer{c.Download(ctx, plainSize, 51), c.Upload(ctx, plainSize, 52)} {
		if _, err := tr.Wait(ctx, plainStall); err != nil {
			t.Fatalf("transfer %d of a stamped plain client: %v", i, err)
		}
	}
	src := b.edge.Router().Sources()
	if len(src) != 1 {
		t.Fatalf("router saw %v, want one source", src)
	}
	for addr, st := range src {
		if st.ID != warptest.ClientID(stamp) || st.Mixed {
			t.Errorf("router saw from %v client ID %v (mixed: %v), want every datagram stamped %v", addr, st.ID, st.Mixed, stamp)
		}
	}
	if got := c.Bind().Foreign(); got != 0 {
		t.Errorf("%d replies reached the plain client with non-zero reserved bytes", got)
	}
	if got := c.Bind().Received(); got == 0 {
		t.Error("the client received nothing")
	}
	for _, o := range recorded[*messages.SessionOpened](b.events) {
		if !o.Client.IsZero() {
			t.Errorf("the session shows client ID %v; a plain client has none (the stamp is not its ID)", o.Client)
		}
	}
}

// The one case tracking cannot follow: a plain client that changes address
// and hand-shakes again before sending anything else. Nothing in its
// initiation says whose it is, so it gets a new session on a new upstream
// port; the handshake completes all the same (it is a fresh one), and the
// client works through the new session.
func TestE2EPlainClientRehandshakesFromNewAddress(t *testing.T) {
	b := newPlainBed(t, nil)
	c := b.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), plainTimeout)
	defer cancel()
	handshake(t, ctx, c)
	// wireguard-go confirms a completed handshake with a keepalive: once
	// udpfwd has it (the initiation was the first), nothing else is on its
	// way from the old port.
	k := b.relay.Counters()
	eventually(t, "the keepalive after the handshake", func() bool { return k.Datagrams(stats.ToUpstream) >= 2 })
	if _, err := c.Bind().Roam(nil); err != nil { // a new port, and nothing sent from it
		t.Fatal(err)
	}
	if err := c.Rehandshake(ctx); err != nil {
		t.Fatalf("handshake from the new address: %v", err)
	}
	if err := c.Echo(ctx, []byte("after")); err != nil {
		t.Fatal(err)
	}
	opened := recorded[*messages.SessionOpened](b.events)
	if len(opened) != 2 || opened[0].UpstreamLocal == opened[1].UpstreamLocal {
		t.Fatalf("sessions opened: %v; want a second one on another upstream port", opened)
	}
	if src := b.edge.Router().Sources(); len(src) != 2 {
		t.Errorf("router saw %v, want the two upstream ports", src)
	}
	if n := len(recorded[*messages.ClientRoamed](b.events)); n != 0 {
		t.Errorf("%d roams: the first session must not have moved", n)
	}
}
