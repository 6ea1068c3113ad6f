package relay_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/warptest"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// Workers: each listening address is a group of sockets, one per worker,
// and the kernel steers every client ID to worker (ID mod workers).

// testLogger logs what a relay says at info and above through t.
func testLogger(t *testing.T) *zap.Logger { return zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)) }

// workerOf is the worker the kernel steers id to among n (udpio's
// steering program reads bytes 1..3 of the payload).
func workerOf(id wgproto.ClientID, n int) int {
	return udpio.GroupIndex([]byte{1, id[0], id[1], id[2]}, n)
}

// With 4 workers, 200 client IDs, each sending from 5 source ports, reach
// the upstream each from exactly one upstream port, and each ID's session
// lives on the worker its ID steers to. Nothing is dropped: no datagram of
// an ID reached a worker without its session.
func TestWorkersSteerClientIDs(t *testing.T) {
	const workers, ids, ports = 4, 200, 5
	up := newUpstream(t, "127.0.0.1:0", false)
	r := startConfig(t, relayConfig(t, up.addr(), func(c *config.Relay) {
		c.Workers = workers
		c.Security.NewSessionsPerIP, c.Security.NewSessionsPerIPBurst = ids, ids // all from 127.0.0.1
	}, "127.0.0.1:0"))
	if r.Workers() != workers {
		t.Fatalf("%d workers, want %d", r.Workers(), workers)
	}
	clients := make([]*client, ports)
	for i := range clients {
		clients[i] = newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	}
	id := func(i int) wgproto.ClientID { return wgproto.ClientID{0x57, byte(i >> 8), byte(i)} }
	// Sent in rounds of 50 and read before the next, so that the test
	// upstream's socket buffer holds every datagram.
	from := make(map[wgproto.ClientID]map[netip.AddrPort]int)
	t.Cleanup(func() { t.Log(dropsOf(r.Counters())) })
	round := func(c *client, msg func(i int) []byte) {
		t.Helper()
		for lo := 0; lo < ids; lo += 50 {
			for i := lo; i < min(lo+50, ids); i++ {
				c.send(t, msg(i))
			}
			for i := lo; i < min(lo+50, ids); i++ {
				d := up.next(t)
				x := wgproto.ClientID(d.data[1:4])
				if from[x] == nil {
					from[x] = make(map[netip.AddrPort]int)
				}
				from[x][d.from]++
			}
		}
	}
	round(clients[0], func(i int) []byte { return wgtest.Initiation(id(i), uint32(i)) })
	for p, c := range clients {
		round(c, func(i int) []byte { return wgtest.Transport(id(i), 7, uint64(p), 64) })
	}
	used := make(map[netip.AddrPort]wgproto.ClientID)
	for i := range ids {
		x := id(i)
		if len(from[x]) != 1 {
			t.Fatalf("client %v reached the upstream from %d ports %v, want one", x, len(from[x]), from[x])
		}
		for p, n := range from[x] {
			if n != 1+ports {
				t.Errorf("client %v: %d datagrams from %v, want %d", x, n, p, 1+ports)
			}
			if other, ok := used[p]; ok {
				t.Fatalf("clients %v and %v share upstream port %v", other, x, p)
			}
			used[p] = x
		}
	}
	if n := r.Counters().TotalDropped(); n != 0 {
		t.Errorf("%d datagrams dropped, want none", n)
	}
	byWorker, err := r.WorkerClients(waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for w, list := range byWorker {
		total += len(list)
		for _, x := range list {
			if want := workerOf(x, workers); want != w {
				t.Errorf("client %v's session is on worker %d, want %d", x, w, want)
			}
		}
	}
	if total != ids {
		t.Errorf("%d sessions across the workers, want %d", total, ids)
	}
}

// boundSockets counts the UDP sockets of this process's network namespace
// bound to ap's port on ap's address, from /proc/net/udp or udp6.
func boundSockets(t *testing.T, ap netip.AddrPort) int {
	t.Helper()
	file := "/proc/net/udp"
	if ap.Addr().Is6() {
		file = "/proc/net/udp6"
	}
	f, err := os.Open(file)
	if err != nil {
		t.Skipf("no %s: %v", file, err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		_, port, ok := strings.Cut(fields[1], ":") // local_address: hex IP, hex port
		if !ok {
			continue
		}
		if p, err := strconv.ParseUint(port, 16, 16); err == nil && uint16(p) == ap.Port() {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// With 4 workers a listening address is bound by 4 sockets, IPv4 and IPv6,
// and Close unbinds them all.
func TestWorkersBindOneSocketEach(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			up := newUpstream(t, fam.any, true)
			r, err := relay.Start(relayConfig(t, up.addr(), func(c *config.Relay) { c.Workers = 4 }, fam.any), testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			ap := r.ListenAddrs()[0]
			if n := boundSockets(t, ap); n != 4 {
				t.Errorf("%d sockets bound to %v, want 4", n, ap)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if n := boundSockets(t, ap); n != 0 {
				t.Errorf("%d sockets still bound to %v after Close", n, ap)
			}
		})
	}
}

// A relay with --workers 1 and --reuse-port shares its port with another
// that sets it too (no steering program: the kernel spreads by address);
// without reuse_port on both, the second fails with "port in use".
func TestWorkersReusePort(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0", true)
	cfg := func(reuse bool, workers int, listen string) config.Relay {
		return relayConfig(t, up.addr(), func(c *config.Relay) { c.Workers, c.ReusePort = workers, reuse }, listen)
	}
	first := startConfig(t, cfg(true, 1, "127.0.0.1:0"))
	at := first.ListenAddrs()[0].String()
	for _, tt := range []struct {
		name    string
		reuse   bool
		workers int
	}{
		{"private, one worker", false, 1},
		{"private, two workers", false, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := relay.Start(cfg(tt.reuse, tt.workers, at), testLogger(t))
			if err == nil {
				r.Close()
				t.Fatalf("a second relay bound %s", at)
			}
			if !strings.Contains(err.Error(), "port in use") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q, want one line saying port in use", err)
			}
		})
	}
	second := startConfig(t, cfg(true, 1, at))
	if got := second.ListenAddrs()[0].String(); got != at {
		t.Fatalf("the second relay listens on %s, want %s", got, at)
	}
	if n := boundSockets(t, second.ListenAddrs()[0]); n != 2 {
		t.Errorf("%d sockets bound to %s, want 2", n, at)
	}
}

// A reload that changes the number of workers cannot be made in place
// (ErrRestart); the relay started anew from a snapshot, with 4 workers
// instead of 2, keeps every session on its upstream port, puts each on the
// worker its ID now steers to, and its clients' datagrams go on.
func TestWorkerCountChangeKeepsSessions(t *testing.T) {
	const ids = 12
	up := newUpstream(t, "127.0.0.1:0", true)
	two := relayConfig(t, up.addr(), func(c *config.Relay) { c.Workers = 2 }, "127.0.0.1:0")
	r, err := relay.Start(two, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	at := r.ListenAddrs()[0]
	c := newClient(t, "127.0.0.1:0", at)
	id := func(i int) wgproto.ClientID { return wgproto.ClientID{0x33, 0, byte(i + 1)} }
	for i := range ids {
		c.send(t, wgtest.Initiation(id(i), uint32(i)))
		c.mustRecv(t)
	}
	before, err := r.Sessions(waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	ports := make(map[wgproto.ClientID]netip.AddrPort)
	for _, s := range before.Sessions {
		ports[s.Client] = s.UpstreamLocal
	}
	if len(ports) != ids {
		t.Fatalf("%d sessions, want %d", len(ports), ids)
	}

	four := relayConfig(t, up.addr(), func(c *config.Relay) { c.Workers = 4 }, at.String())
	if err := r.Reconfigure(four); !errors.Is(err, relay.ErrRestart) {
		r.Close()
		t.Fatalf("a changed worker count: %v, want ErrRestart", err)
	}
	saved, err := r.Snapshot(waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	nr := startConfig(t, four, relay.WithRestore(saved))
	if nr.Workers() != 4 {
		t.Fatalf("%d workers after the restart, want 4", nr.Workers())
	}
	// Restored sessions are admitted again by their policies first.
	eventually(t, "every session to be restored", func() bool {
		l, err := nr.Sessions(waitTimeout)
		return err == nil && len(l.Sessions) == ids
	})
	up.drain()
	t.Cleanup(func() { t.Log(dropsOf(nr.Counters())) })
	for i := range ids {
		d := wgtest.Transport(id(i), 5, uint64(i), 64)
		c.send(t, d)
		if got := c.mustRecv(t); string(got) != string(d) {
			t.Fatalf("client %v: got %x back, want its transport", id(i), got[:8])
		}
		if got := up.next(t); got.from != ports[id(i)] {
			t.Errorf("client %v reached the upstream from %v, want its port %v", id(i), got.from, ports[id(i)])
		}
	}
	byWorker, err := nr.WorkerClients(waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	for w, list := range byWorker {
		for _, x := range list {
			if want := workerOf(x, 4); want != w {
				t.Errorf("restored session of %v on worker %d, want %d", x, w, want)
			}
		}
	}
	if n := nr.Counters().Events(stats.SessionOpened); n != 0 {
		t.Errorf("%d sessions opened anew, want every one restored", n)
	}
}

// A real WireGuard client behind 4 workers roams 6 times during a
// download: every datagram of its ID, from every port, reaches the same
// worker, so the upstream sees one port throughout, and Close leaves no
// goroutine (newBedWith's goleak check).
func TestE2EWorkersRoamingDuringDownload(t *testing.T) {
	b := newBedConfig(t, 0, 0, func(_ *warptest.Edge, c *config.Relay) { c.Workers = 4 })
	if b.relay.Workers() != 4 {
		t.Fatalf("%d workers, want 4", b.relay.Workers())
	}
	id := warptest.ClientID{0x0b, 0x0c, 0x0d}
	c := b.client(t, id)
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	handshake(t, ctx, c)
	router := b.edge.Router()

	const roams = 6
	tr := c.Download(ctx, e2eSize, 3)
	ports := []netip.AddrPort{c.LocalAddr()}
	for i := 1; i <= roams; i++ {
		if err := tr.WaitBytes(ctx, e2eSize*int64(i)/(roams+1), e2eStall); err != nil {
			t.Fatal(err)
		}
		a, err := c.Roam(func(a netip.AddrPort) bool { return !slices.Contains(ports, a) })
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, a)
	}
	res, err := tr.Wait(ctx, e2eStall)
	if err != nil {
		t.Fatalf("download with %d roams through 4 workers: %v", roams, err)
	}
	t.Logf("%d bytes verified in %v (%.0f Mbit/s) from %d client ports", res.Bytes, res.Elapsed, res.Mbps(), len(ports))
	if src := router.Sources(); len(src) != 1 {
		t.Fatalf("router saw %d source addresses %v, want udpfwd's one upstream port", len(src), src)
	}
	if n := count[*messages.SessionOpened](b.events); n != 1 {
		t.Errorf("%d sessions opened, want 1", n)
	}
	if n := count[*messages.ClientRoamed](b.events); n < roams {
		t.Errorf("udpfwd reported %d roams, want at least %d", n, roams)
	}
	if n := b.relay.Counters().Dropped(stats.UnknownClient); n != 0 {
		t.Errorf("%d datagrams reached a worker without the client's session", n)
	}
	byWorker, err := b.relay.WorkerClients(waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if want := workerOf(wgproto.ClientID(id), 4); !slices.Contains(byWorker[want], wgproto.ClientID(id)) {
		t.Errorf("the client's session is not on worker %d: %v", want, fmt.Sprint(byWorker))
	}
}

func dropsOf(k *stats.Counters) string {
	var b strings.Builder
	for r := stats.Reason(0); int(r) < stats.NumReasons; r++ {
		if n := k.Dropped(r); n > 0 {
			fmt.Fprintf(&b, "%v=%d ", r, n)
		}
	}
	fmt.Fprintf(&b, "in=%d up=%d back=%d out=%d", k.Datagrams(stats.FromClient), k.Datagrams(stats.ToUpstream), k.Datagrams(stats.FromUpstream), k.Datagrams(stats.ToClient))
	return b.String()
}
