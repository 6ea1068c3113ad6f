package relay_test

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/state"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// poolSocket is a loopback UDP socket the test closes.
func poolSocket(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// poolFreePorts returns n loopback addresses whose ports were free a
// moment ago.
func poolFreePorts(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for range n {
		c := poolSocket(t)
		out = append(out, c.LocalAddr().String())
		c.Close()
	}
	return out
}

// poolRecv reads one datagram from c within a bound.
func poolRecv(t *testing.T, c *net.UDPConn) ([]byte, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
}

// A saved session keeps its listening socket by address: restarted with a
// listen list in another order, its replies leave by the socket of the
// same address, not by the one that now has its old place in the list.
func TestRestoreFindsTheListeningSocketByAddress(t *testing.T) {
	ports := poolFreePorts(t, 2)
	up := poolSocket(t)
	upAddr := netip.MustParseAddrPort(up.LocalAddr().String())
	first := poolRelay(t, ports, []netip.AddrPort{upAddr}, nil)
	client := poolSocket(t)
	id := wgproto.ClientID{0x11, 0x22, 0x33}
	to := netip.MustParseAddrPort(ports[1]) // the client uses the second socket
	if _, err := client.WriteToUDPAddrPort(wgtest.Initiation(id, 7), to); err != nil {
		t.Fatal(err)
	}
	_, session := poolRecv(t, up) // the session's upstream socket
	saved, err := first.Snapshot(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(saved) != 1 || saved[0].Listen != to || saved[0].UpstreamConfig != upAddr.String() {
		t.Fatalf("saved %+v; want one session on %v, for upstream %v", saved, to, upAddr)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	// The same addresses, the other way round.
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	system := relay.NewSystem(log)
	t.Cleanup(system.Shutdown)
	restored := make(chan struct{})
	system.EventStream.Subscribe(func(evt any) {
		if _, ok := evt.(*messages.SessionRestored); ok {
			close(restored)
		}
	})
	cfg := first.Config()
	cfg.Listen[0], cfg.Listen[1] = cfg.Listen[1], cfg.Listen[0]
	second, err := relay.Start(cfg, log, relay.WithSystem(system), relay.WithRestore(saved))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { second.Close() })
	select {
	case <-restored:
	case <-time.After(10 * time.Second):
		t.Fatal("the session was not restored")
	}
	// The upstream speaks first: the reply must leave by the socket the
	// client used, wherever it is in the list now.
	reply := wgtest.Transport(id, 1, 1, 64)
	if _, err := up.WriteToUDPAddrPort(reply, session); err != nil {
		t.Fatal(err)
	}
	got, from := poolRecv(t, client)
	if from != to || !bytes.Equal(got, reply) {
		t.Fatalf("the reply came from %v, want %v, the socket the client used", from, to)
	}
}

// A saved session of a pool is restored onto its own endpoint, which must
// still be in the pool; one of an endpoint that left is not restored.
func TestRestoreKeepsTheEndpoint(t *testing.T) {
	upA, upB := poolSocket(t), poolSocket(t)
	a, b := netip.MustParseAddrPort(upA.LocalAddr().String()), netip.MustParseAddrPort(upB.LocalAddr().String())
	ports := poolFreePorts(t, 1)
	first := poolRelay(t, ports, []netip.AddrPort{a, b}, nil)
	saved, err := first.Snapshot(10 * time.Second)
	if err != nil || len(saved) != 0 {
		t.Fatalf("snapshot of an idle relay: %v, %v", saved, err)
	}
	// A session saved on the second endpoint (as one that moved there).
	client := poolSocket(t)
	id := wgproto.ClientID{0x44, 0x55, 0x66}
	if _, err := client.WriteToUDPAddrPort(wgtest.Initiation(id, 1), netip.MustParseAddrPort(ports[0])); err != nil {
		t.Fatal(err)
	}
	_, local := poolRecv(t, upA)
	saved, err = first.Snapshot(10 * time.Second)
	if err != nil || len(saved) != 1 {
		t.Fatalf("snapshot: %v, %v", saved, err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	onB := saved[0]
	onB.Upstream, onB.UpstreamConfig = b, b.String()

	for _, tt := range []struct {
		name      string
		upstreams []netip.AddrPort
		want      string // the endpoint it is restored on; "" for none
	}{
		{"its endpoint is in the pool", []netip.AddrPort{a, b}, b.String()},
		{"its endpoint is first now", []netip.AddrPort{b, a}, b.String()},
		{"its endpoint left the pool", []netip.AddrPort{a}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
			system := relay.NewSystem(log)
			t.Cleanup(system.Shutdown)
			got := make(chan *messages.SessionRestored, 1)
			system.EventStream.Subscribe(func(evt any) {
				if e, ok := evt.(*messages.SessionRestored); ok {
					got <- e
				}
			})
			cfg := first.Config()
			cfg.Upstream, cfg.MoreUpstreams = config.HostPortFrom(tt.upstreams[0]), nil
			for _, u := range tt.upstreams[1:] {
				cfg.MoreUpstreams = append(cfg.MoreUpstreams, config.HostPortFrom(u))
			}
			r, err := relay.Start(cfg, log, relay.WithSystem(system), relay.WithRestore([]state.Session{onB}))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			if tt.want == "" {
				// Restoring is the first thing the supervisor does: once
				// it lists its sessions, it has decided.
				if l, err := r.Sessions(10 * time.Second); err != nil || len(l.Sessions) != 0 {
					t.Fatalf("sessions %+v, %v; want none", l, err)
				}
				return
			}
			select {
			case e := <-got:
				if e.Endpoint != tt.want || e.Upstream != b || e.UpstreamLocal != local || e.Rebound {
					t.Fatalf("restored on %s (%v) from %v, rebound %v; want %s from %v", e.Endpoint, e.Upstream, e.UpstreamLocal, e.Rebound, tt.want, local)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("not restored")
			}
			// Its datagrams reach its own endpoint from its own port.
			if _, err := client.WriteToUDPAddrPort(wgtest.Transport(id, 1, 1, 64), r.ListenAddrs()[0]); err != nil {
				t.Fatal(err)
			}
			if _, from := poolRecv(t, upB); from != local {
				t.Fatalf("the restored session reached %v from %v, want from %v", b, from, local)
			}
		})
	}
}

// A reload that changes the pool keeps the sessions of the endpoints that
// stay, wherever they are in the list, and ends those of an endpoint that
// left; failover_after changes in place.
func TestReloadPool(t *testing.T) {
	upA, upB := poolSocket(t), poolSocket(t)
	a, b := netip.MustParseAddrPort(upA.LocalAddr().String()), netip.MustParseAddrPort(upB.LocalAddr().String())
	r := poolRelay(t, []string{"127.0.0.1:0"}, []netip.AddrPort{a, b}, nil)
	events := recordPoolEvents(t, r)
	client := poolSocket(t)
	id := wgproto.ClientID{0x77, 0x88, 0x99}
	if _, err := client.WriteToUDPAddrPort(wgtest.Initiation(id, 1), r.ListenAddrs()[0]); err != nil {
		t.Fatal(err)
	}
	_, local := poolRecv(t, upA) // the first endpoint, as none has a round trip yet

	cfg := r.Config()
	cfg.Upstream, cfg.MoreUpstreams, cfg.FailoverAfter = config.HostPortFrom(b), []config.HostPort{config.HostPortFrom(a)}, 3
	if err := r.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := client.WriteToUDPAddrPort(wgtest.Transport(id, 1, 1, 64), r.ListenAddrs()[0]); err != nil {
		t.Fatal(err)
	}
	if _, from := poolRecv(t, upA); from != local {
		t.Fatalf("after the pool was reordered the session sends from %v, want %v", from, local)
	}
	if s := poolSession(t, r, [3]byte(id)); s.Endpoint != a.String() {
		t.Fatalf("the session is on %q after the reload, want %v", s.Endpoint, a)
	}
	eps := r.MetricsStatus().Endpoints()
	if len(eps) != 2 || eps[0].Endpoint != b.String() || eps[1].Endpoint != a.String() || eps[1].Sessions != 1 {
		t.Fatalf("endpoints after the reload: %+v", eps)
	}

	cfg.MoreUpstreams = nil
	if err := r.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	if closed := poolSeen[*messages.SessionClosed](events); len(closed) != 1 || closed[0].Client != id {
		t.Fatalf("sessions closed: %+v; want the one of the endpoint that left", closed)
	}
	// A new initiation opens a new session, on the endpoint left.
	if _, err := client.WriteToUDPAddrPort(wgtest.Initiation(id, 2), r.ListenAddrs()[0]); err != nil {
		t.Fatal(err)
	}
	poolRecv(t, upB)
	if s := poolSession(t, r, [3]byte(id)); s.Endpoint != b.String() || s.Upstream != b {
		t.Fatalf("the new session is on %q (%v), want %v", s.Endpoint, s.Upstream, b)
	}
}
