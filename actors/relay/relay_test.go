package relay_test

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

func TestRoundTrip(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			up := newUpstream(t, f.any, true)
			r := startRelay(t, f.any, up.addr(), 0)
			ev := watchEvents(t, r)
			c := newClient(t, f.any, r.ListenAddrs()[0])

			init := wgtest.Initiation(idA, 1)
			c.send(t, init)
			got := up.next(t)
			if !bytes.Equal(got.data, init) {
				t.Fatal("the upstream did not get the initiation unchanged")
			}
			if got.from.Port() == c.addr().Port() || !got.from.Addr().IsLoopback() {
				t.Fatalf("upstream saw %v; want a relay port of its own", got.from)
			}
			if reply := c.mustRecv(t); !bytes.Equal(reply, init) {
				t.Fatal("the client did not get the echo unchanged")
			}
			opened := await[*messages.SessionOpened](t, ev)
			if opened.Client != idA || opened.UpstreamLocal.Port() != got.from.Port() || opened.ClientAddr != c.addr() {
				t.Fatalf("SessionOpened %+v does not match client %v, port %d", opened.SessionInfo, c.addr(), got.from.Port())
			}

			data := wgtest.Transport(idA, 99, 1, 1392)
			c.send(t, data)
			if got2 := up.next(t); got2.from != got.from || !bytes.Equal(got2.data, data) {
				t.Fatalf("transport came from %v, want the session's port %v, unchanged", got2.from, got.from)
			}
			if reply := c.mustRecv(t); !bytes.Equal(reply, data) {
				t.Fatal("the client did not get the transport echo unchanged")
			}
		})
	}
}

// A dual-stack listener serves IPv4 clients and answers them.
func TestDualStackListener(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0", true)
	r := startRelay(t, "[::]:0", up.addr(), 0)
	port := r.ListenAddrs()[0].Port()
	for _, host := range []string{"127.0.0.1", "::1"} {
		c := newClient(t, netip.AddrPortFrom(netip.MustParseAddr(host), 0).String(), at(host, port))
		id := wgproto.ClientID{1, 2, byte(len(host))}
		c.send(t, wgtest.Initiation(id, 1))
		up.next(t)
		if reply := c.mustRecv(t); reply[1] != id[0] || reply[3] != id[2] {
			t.Fatalf("%s: wrong reply", host)
		}
	}
}

func TestTwoClientIDsTwoPorts(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			up := newUpstream(t, f.any, false)
			r := startRelay(t, f.any, up.addr(), 0)
			// Both from the same client socket: only the ID separates them.
			c := newClient(t, f.any, r.ListenAddrs()[0])
			c.send(t, wgtest.Initiation(idA, 1))
			a := up.next(t)
			c.send(t, wgtest.Initiation(idB, 2))
			b := up.next(t)
			if a.from == b.from {
				t.Fatalf("two client IDs share upstream port %v", a.from)
			}
			// The two sessions write independently: match by ID, not order.
			c.send(t, wgtest.Transport(idA, 5, 0, 64))
			c.send(t, wgtest.Transport(idB, 6, 0, 64))
			for range 2 {
				got := up.next(t)
				want := a.from
				if wgproto.ClientID(got.data[1:4]) == idB {
					want = b.from
				}
				if got.from != want {
					t.Fatalf("transport of %x from %v, want %v", got.data[1:4], got.from, want)
				}
			}
		})
	}
}

func TestRoamingKeepsUpstreamPort(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			up := newUpstream(t, f.any, false)
			r := startRelay(t, f.any, up.addr(), 0)
			ev := watchEvents(t, r)
			wifi := newClient(t, f.any, r.ListenAddrs()[0])
			wifi.send(t, wgtest.Initiation(idA, 1))
			first := up.next(t)
			up.sendTo(t, first.from, wgtest.Response(idA, 50, 1))
			wifi.mustRecv(t)

			// The client changes network: a new source port, same ID.
			cell := newClient(t, f.any, r.ListenAddrs()[0])
			cell.send(t, wgtest.Transport(idA, 50, 1, 32))
			moved := up.next(t)
			if moved.from != first.from {
				t.Fatalf("after roaming the upstream sees %v, want the same %v", moved.from, first.from)
			}
			roamed := await[*messages.ClientRoamed](t, ev)
			if roamed.From != wifi.addr() || roamed.ClientAddr != cell.addr() {
				t.Fatalf("ClientRoamed from %v to %v, want %v to %v", roamed.From, roamed.ClientAddr, wifi.addr(), cell.addr())
			}
			reply := wgtest.Transport(idA, 1, 7, 128)
			up.sendTo(t, first.from, reply)
			if got := cell.mustRecv(t); !bytes.Equal(got, reply) {
				t.Fatal("the reply did not reach the new address unchanged")
			}
			if _, ok := wifi.recv(50 * time.Millisecond); ok {
				t.Fatal("the old address still gets replies")
			}
		})
	}
}

// TestRoamingWithAnEchoUpstream: an upstream that never answers a
// handshake (an echo server under a load generator) still sees roaming:
// a generator run again with the same client ID from a new port gets its
// replies at once, through the same upstream port.
func TestRoamingWithAnEchoUpstream(t *testing.T) {
	up, r, first := openEchoSession(t)
	from := up.next(t).from
	second := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	for i, d := range [][]byte{wgtest.Initiation(idA, 2), wgtest.Transport(idA, 9, 0, 64)} {
		second.send(t, d)
		if got := second.mustRecv(t); !bytes.Equal(got, d) {
			t.Fatalf("datagram %d: the new port got %x, want its echo", i, got)
		}
		if got := up.next(t); got.from != from {
			t.Fatalf("datagram %d left from %v, want the session's port %v", i, got.from, from)
		}
	}
	if _, ok := first.recv(50 * time.Millisecond); ok {
		t.Fatal("the old port still gets replies")
	}
}

func TestDrops(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0", false)
	// One worker: the marker below then follows every bad datagram down
	// the same path. With several, zero-ID datagrams go to worker 0 and the
	// marker to its ID's worker, and it would order nothing.
	r := startConfig(t, relayConfig(t, up.addr(), func(c *config.Relay) { c.Workers = 1 }, "127.0.0.1:0"))
	c := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	// An open session, so that bad datagrams for a known ID are tested too.
	c.send(t, wgtest.Initiation(idA, 1))
	up.next(t)

	unknown := wgproto.ClientID{9, 9, 9}
	bad := []struct {
		name   string
		b      []byte
		reason stats.Reason
	}{
		{"zero ID initiation", wgtest.Initiation(wgproto.ClientID{}, 1), stats.ZeroClientID},
		{"zero ID transport", wgtest.Transport(wgproto.ClientID{}, 1, 0, 64), stats.ZeroClientID},
		{"short initiation", wgtest.Initiation(idA, 1)[:147], stats.BadSize},
		{"long response", append(wgtest.Response(idA, 1, 2), 0), stats.BadSize},
		{"short cookie", wgtest.Cookie(idA, 1)[:60], stats.BadSize},
		{"transport 16", wgtest.Transport(idA, 1, 0, 16), stats.BadSize},
		{"type 0", append([]byte{0, 1, 2, 3}, make([]byte, 60)...), stats.BadType},
		{"type 5", append([]byte{5, 1, 2, 3}, make([]byte, 60)...), stats.BadType},
		{"two bytes", []byte{1, 2}, stats.BadType},
		{"empty", []byte{}, stats.BadType},
		{"oversize", append(wgtest.Transport(idA, 1, 0, 4096), make([]byte, 16)...), stats.Oversize},
		{"transport for unknown ID", wgtest.Transport(unknown, 1, 0, 64), stats.UnknownClient},
		{"response for unknown ID", wgtest.Response(unknown, 1, 2), stats.UnknownClient},
		{"cookie for unknown ID", wgtest.Cookie(unknown, 1), stats.UnknownClient},
	}
	want := make(map[stats.Reason]uint64)
	for _, b := range bad {
		c.send(t, b.b)
		want[b.reason]++
	}
	// A marker after them: it must be the next thing the upstream sees.
	marker := wgtest.Transport(idA, 77, 77, 64)
	c.send(t, marker)
	if got := up.next(t); !bytes.Equal(got.data, marker) {
		t.Fatalf("the upstream got %d bytes of type %d before the marker", len(got.data), got.data[0])
	}
	for reason, n := range want {
		if got := r.Counters().Dropped(reason); got != n {
			t.Errorf("dropped %s = %d, want %d", reason, got, n)
		}
	}
}

func TestForeignSourceToSessionPortDropped(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			up := newUpstream(t, f.any, false)
			r := startRelay(t, f.any, up.addr(), 0)
			c := newClient(t, f.any, r.ListenAddrs()[0])
			c.send(t, wgtest.Initiation(idA, 1))
			session := up.next(t).from

			stranger := newUpstream(t, f.any, false)
			stranger.sendTo(t, session, wgtest.Response(idA, 66, 1))
			genuine := wgtest.Response(idA, 55, 1)
			up.sendTo(t, session, genuine)
			if got := c.mustRecv(t); !bytes.Equal(got, genuine) {
				t.Fatal("the client got the stranger's datagram")
			}
			if _, ok := c.recv(50 * time.Millisecond); ok {
				t.Fatal("the client got a second reply")
			}
		})
	}
}

func TestStaticForward(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			up := newUpstream(t, f.any, true)
			r, err := relay.Start(relayConfig(t, up.addr(), func(c *config.Relay) {
				c.Mode = config.ModeForward
				c.UpstreamBind = netip.MustParseAddrPort(f.any)
			}, f.any), zaptest.NewLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			a := newClient(t, f.any, r.ListenAddrs()[0])
			// Anything is forwarded: this is not WireGuard.
			a.send(t, []byte("hello"))
			got := up.next(t)
			if string(got.data) != "hello" {
				t.Fatalf("upstream got %q", got.data)
			}
			if string(a.mustRecv(t)) != "hello" {
				t.Fatal("no reply")
			}
			// Another client address: replies follow the newest sender,
			// from the same outbound port.
			b := newClient(t, f.any, r.ListenAddrs()[0])
			b.send(t, []byte("moved"))
			if got2 := up.next(t); got2.from != got.from {
				t.Fatalf("outbound port changed from %v to %v", got.from, got2.from)
			}
			if string(b.mustRecv(t)) != "moved" {
				t.Fatal("the reply did not follow the client")
			}
		})
	}
}

// A relay with open sessions closes, and no goroutine of it is left.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0", true)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	r, err := relay.Start(relayConfig(t, up.addr(), nil, "127.0.0.1:0"), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := byte(1); i <= 5; i++ {
		c := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
		c.send(t, wgtest.Initiation(wgproto.ClientID{i, i, i}, 1))
		c.mustRecv(t)
	}
	// Close returns, within the bound, and leaves nothing running.
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("Close did not return within %v", waitTimeout)
	}
}

// Start refuses what it cannot bind, naming the address, and a config that
// was never validated. Bad values are refused by config.File.Validate
// (internal/config's tests).
func TestStartErrors(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0", false)
	taken := newClient(t, "127.0.0.1:0", up.addr())
	tests := []struct {
		name string
		cfg  config.Relay
		msg  string
	}{
		{"port in use", relayConfig(t, up.addr(), nil, taken.addr().String()), "listen on " + taken.addr().String()},
		{"not validated", config.Relay{Name: "x"}, "validate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := relay.Start(tt.cfg, zaptest.NewLogger(t))
			if err == nil {
				r.Close()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
		})
	}
}

func TestSessionsList(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0", true)
	r := startRelay(t, "127.0.0.1:0", up.addr(), 0)
	a := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	b := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	a.send(t, wgtest.Initiation(idA, 1))
	a.mustRecv(t)
	b.send(t, wgtest.Initiation(idB, 1))
	b.mustRecv(t)
	b.send(t, wgtest.Transport(idB, 1, 1, 1392))
	b.mustRecv(t)
	l, err := r.Sessions(waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Sessions) != 2 {
		t.Fatalf("%d sessions listed, want 2", len(l.Sessions))
	}
	for _, s := range l.Sessions {
		want, n := a.addr(), uint64(1)
		if s.Client == idB {
			want, n = b.addr(), 2
		}
		if s.ClientAddr != want || s.Stats.Datagrams[stats.FromClient] != n || s.Stats.Datagrams[stats.FromUpstream] != n {
			t.Errorf("session %v: addr %v, datagrams %v; want %v and %d each way", s.Client, s.ClientAddr, s.Stats.Datagrams, want, n)
		}
	}
	if r.Counters().Live() != 2 {
		t.Errorf("live = %d", r.Counters().Live())
	}
}

func TestHealthy(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0", false)
	r, err := relay.Start(relayConfig(t, up.addr(), nil, "127.0.0.1:0"), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Healthy(); err != nil {
		t.Fatalf("a running relay is unhealthy: %v", err)
	}
	r.Close()
	if err := r.Healthy(); err == nil {
		t.Fatal("a closed relay is healthy")
	}
}

// A hostname upstream is looked up again on an interval: a new address
// applies to new sessions, existing ones keep theirs, and the change is
// counted.
func TestUpstreamReResolved(t *testing.T) {
	// One name, one port: the two upstreams are two loopback addresses.
	first := newUpstream(t, "127.0.0.1:0", false)
	port := first.addr().Port()
	alt := newUpstream(t, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), port).String(), false)
	var mu sync.Mutex
	answer := netip.MustParseAddr("127.0.0.1")
	lookup := func(context.Context, string, string) ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		return []netip.Addr{answer}, nil
	}
	r, err := relay.Start(relayConfig(t, first.addr(), func(c *config.Relay) {
		c.Upstream = config.HostPort{Name: "warp.example", Port: port}
		c.ResolveInterval = 20 * time.Millisecond
	}, "127.0.0.1:0"), zaptest.NewLogger(t), relay.WithLookup(lookup))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	eventually(t, "the first lookup", func() bool {
		a.send(t, wgtest.Initiation(idA, 1))
		select {
		case <-first.in:
			return true
		case <-time.After(20 * time.Millisecond):
			return false
		}
	})
	mu.Lock()
	answer = netip.MustParseAddr("127.0.0.2")
	mu.Unlock()
	eventually(t, "the change to be counted", func() bool { return r.Counters().Events(stats.UpstreamChanged) == 1 })
	c := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	c.send(t, wgtest.Initiation(idB, 2))
	if got := alt.next(t); wgproto.ClientID(got.data[1:4]) != idB {
		t.Fatal("the new session did not go to the new address")
	}
	a.send(t, wgtest.Transport(idA, 1, 1, 64))
	if got := first.next(t); wgproto.ClientID(got.data[1:4]) != idA {
		t.Fatal("the existing session left its upstream")
	}
}
