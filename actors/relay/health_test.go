package relay_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/metrics"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// scrape reads r's metrics as /metrics serves them: "name{label=value,...}"
// to the value (a histogram's sample count).
func scrape(t *testing.T, r *relay.Relay) map[string]float64 {
	t.Helper()
	c := metrics.NewCollector()
	if err := c.Set([]metrics.Relay{{Name: r.Name(), Counters: r.Counters(), Status: r.MetricsStatus()}}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(labels)
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// handshakeUpstream answers every handshake initiation with a response
// whose receiver index is the initiation's sender index, as WireGuard does,
// and echoes everything else.
func handshakeUpstream(t *testing.T) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			h, v := wgproto.Parse(buf[:n])
			if v == wgproto.OK && h.Type == wgproto.TypeInitiation {
				c.WriteToUDPAddrPort(wgtest.Response(h.Client, 77, h.Index), from)
				continue
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// The health record counts handshakes forwarded and answered, times their
// round trip, and how long sessions lived; it shows the relay up, its cap,
// and its upstream's address.
func TestMetricsOfALiveRelay(t *testing.T) {
	up := handshakeUpstream(t)
	r := startConfig(t, relayConfig(t, up, func(c *config.Relay) { c.Security.MaxSessions = 5 }, "127.0.0.1:0"))
	ev := watchEvents(t, r)
	c := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	c.send(t, wgtest.Initiation(idA, 9))
	if h, v := wgproto.Parse(c.mustRecv(t)); v != wgproto.OK || h.Type != wgproto.TypeResponse || h.Receiver != 9 {
		t.Fatalf("no handshake response: %+v %v", h, v)
	}
	name := r.Name()
	eventually(t, "the response to be counted", func() bool {
		return scrape(t, r)[`udpfwd_handshakes_total{relay=`+name+`,result=answered}`] == 1
	})
	m := scrape(t, r)
	for key, want := range map[string]float64{
		`udpfwd_up{relay=` + name + `}`:                                              1,
		`udpfwd_session_limit{relay=` + name + `}`:                                   5,
		`udpfwd_upstream_resolved_info{addr=` + up.String() + `,relay=` + name + `}`: 1,
		`udpfwd_handshakes_total{relay=` + name + `,result=forwarded}`:               1,
		`udpfwd_handshake_rtt_seconds{relay=` + name + `}`:                           1,
		`udpfwd_session_duration_seconds{relay=` + name + `}`:                        0,
	} {
		if got, ok := m[key]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", key, got, ok, want)
		}
	}
	// A session that ends is timed.
	if err := r.Reconfigure(relayConfig(t, up, func(c *config.Relay) {
		c.Security.MaxSessions = 5
		c.Security.AllowClients = []wgproto.ClientID{idB}
	}, "127.0.0.1:0")); err != nil {
		t.Fatal(err)
	}
	await[*messages.SessionClosed](t, ev)
	eventually(t, "the session's lifetime to be recorded", func() bool {
		return scrape(t, r)[`udpfwd_session_duration_seconds{relay=`+name+`}`] == 1
	})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got := scrape(t, r)[`udpfwd_up{relay=`+name+`}`]; got != 0 {
		t.Errorf("udpfwd_up = %v after Close, want 0", got)
	}
}

// At its session cap a relay is unhealthy: new clients are refused.
func TestHealthAtSessionCap(t *testing.T) {
	up := newPortsUpstream(t, "127.0.0.1:0")
	r := startConfig(t, relayConfig(t, up.addr(), func(c *config.Relay) { c.Security.MaxSessions = 1 }, "127.0.0.1:0"))
	if err := r.Healthy(); err != nil {
		t.Fatalf("a fresh relay: %v", err)
	}
	openEchoed(t, newClient(t, "127.0.0.1:0", r.ListenAddrs()[0]), idA)
	err := r.Healthy()
	if err == nil || err.Error() != "relay default: at its session cap (1 of 1)" {
		t.Fatalf("Healthy() = %v, want the cap named", err)
	}
}

// A listen address a reload could not bind is a listener down; the next
// reload binds it.
func TestHealthListenerDown(t *testing.T) {
	up := newPortsUpstream(t, "127.0.0.1:0")
	r := startConfig(t, relayConfig(t, up.addr(), nil, "127.0.0.1:0"))
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	held := other.LocalAddr().(*net.UDPAddr).AddrPort()
	want := relayConfig(t, up.addr(), nil, "[::1]:0", held.String())
	if err := r.Reconfigure(want); err == nil || !strings.Contains(err.Error(), held.String()) {
		t.Fatalf("Reconfigure onto a held address: %v, want it named", err)
	}
	if err := r.Healthy(); err == nil || !strings.Contains(err.Error(), "listener "+held.String()+" is down") {
		t.Fatalf("Healthy() = %v, want the listener down", err)
	}
	if got := r.Config(); got.Equal(&want) {
		t.Fatal("Config() includes the address that is not bound; the next reload would not try it again")
	}
	other.Close()
	if err := r.Reconfigure(want); err != nil {
		t.Fatal(err)
	}
	if err := r.Healthy(); err != nil {
		t.Fatalf("after the address was bound: %v", err)
	}
	if got := r.ListenAddrs(); len(got) != 2 || got[1] != held {
		t.Fatalf("listening on %v, want [::1] and %v", got, held)
	}
}

// While the upstream's name does not resolve the relay is unhealthy and
// shows no upstream address; the failure is logged once, not every retry.
func TestHealthUnresolvedUpstream(t *testing.T) {
	up := newPortsUpstream(t, "127.0.0.1:0")
	var resolves atomic.Bool
	var lookups atomic.Int64
	lookup := func(ctx context.Context, _, host string) ([]netip.Addr, error) {
		defer lookups.Add(1)
		if !resolves.Load() {
			return nil, errors.New("lookup " + host + ": no such host")
		}
		return []netip.Addr{up.addr().Addr()}, nil
	}
	cfg := func(every time.Duration) config.Relay {
		return relayConfig(t, up.addr(), func(c *config.Relay) {
			c.Upstream = config.HostPort{Name: "upstream.test", Port: up.addr().Port()}
			c.ResolveInterval = every
		}, "127.0.0.1:0")
	}
	core, logs := observer.New(zap.InfoLevel)
	r, err := relay.Start(cfg(time.Hour), zap.New(core), relay.WithLookup(lookup))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// A changed resolve interval makes the resolver look again at once:
	// three failures in a row.
	for i := range 3 {
		n := lookups.Load()
		if err := r.Reconfigure(cfg(time.Duration(2+i%2) * time.Hour)); err != nil {
			t.Fatal(err)
		}
		eventually(t, "another lookup", func() bool { return lookups.Load() > n })
	}
	name := "upstream.test:" + up.addr().String()[strings.LastIndexByte(up.addr().String(), ':')+1:]
	if err := r.Healthy(); err == nil || err.Error() != "relay default: upstream "+name+" has no address" {
		t.Fatalf("Healthy() = %v, want the upstream named", err)
	}
	for key := range scrape(t, r) {
		if strings.HasPrefix(key, "udpfwd_upstream_resolved_info") {
			t.Errorf("%s while the name does not resolve", key)
		}
	}
	if n := logs.FilterMessage("resolve upstream").Len(); n != 1 {
		t.Errorf("%d warnings for %d failed lookups, want one", n, lookups.Load())
	}
	resolves.Store(true)
	if err := r.Reconfigure(cfg(time.Hour)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the upstream to resolve", func() bool { return r.Healthy() == nil })
	key := `udpfwd_upstream_resolved_info{addr=` + up.addr().String() + `,relay=default}`
	if scrape(t, r)[key] != 1 {
		t.Errorf("no %s once resolved", key)
	}
}

// Name lookups that fail retry after 5 s, then twice as long each time, up
// to the resolve interval.
func TestResolveBackoff(t *testing.T) {
	var waits []time.Duration
	retry := 5 * time.Second
	for range 6 {
		var wait time.Duration
		wait, retry = relay.Backoff(retry, time.Minute)
		waits = append(waits, wait)
	}
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute}
	for i := range want {
		if waits[i] != want[i] {
			t.Fatalf("waits %v, want %v", waits, want)
		}
	}
}

// The kernel's drops on a listening socket whose buffer overflows are
// counted when a scrape asks.
func TestKernelDropsCounted(t *testing.T) {
	up := newPortsUpstream(t, "127.0.0.1:0")
	r := startConfig(t, relayConfig(t, up.addr(), func(c *config.Relay) { c.ReadBuffer = config.MinSocketBuffer }, "127.0.0.1:0"))
	s, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(r.ListenAddrs()[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	junk := make([]byte, 1200) // type 0: dropped as bad_type once read
	key := `udpfwd_listener_kernel_drops_total{relay=default}`
	eventually(t, "the kernel to drop datagrams", func() bool {
		for range 200 {
			s.Write(junk)
		}
		return scrape(t, r)[key] > 0
	})
}

// A static forward is no session: no session events, no session counts,
// no session rows; /sessions shows it as a forward, with its rule.
func TestForwardIsNoSession(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0", true)
	core, logs := observer.New(zap.DebugLevel)
	system := relay.NewSystem(zap.NewNop())
	ev := watchSystem(t, system)
	r, err := relay.Start(relayConfig(t, up.addr(), func(c *config.Relay) {
		c.Name = "line4-2"
		c.Mode = config.ModeForward
	}, "127.0.0.1:0"), zap.New(core), relay.WithSystem(system), relay.WithOrigin("rules:4:2"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		r.Close()
		system.Shutdown()
	}()
	a := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	a.send(t, []byte("hello"))
	if string(a.mustRecv(t)) != "hello" {
		t.Fatal("no reply")
	}
	b := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	b.send(t, []byte("moved"))
	if string(b.mustRecv(t)) != "moved" {
		t.Fatal("the reply did not follow the client")
	}
	ctx := context.Background()
	if ss, err := r.AdminSessions(ctx); err != nil || len(ss) != 0 {
		t.Errorf("AdminSessions: %v, %v; want no sessions", ss, err)
	}
	f, err := r.AdminForward(ctx)
	if err != nil || f == nil {
		t.Fatalf("AdminForward: %v, %v", f, err)
	}
	if f.Rule != "rules:4:2" || f.Listen != r.ListenAddrs()[0] || f.ClientAddr != b.addr() || f.Upstream != up.addr() ||
		!f.UpstreamLocal.IsValid() || f.Stats.Datagrams[0] != 2 {
		t.Errorf("forward %+v", f)
	}
	if r.Counters().Live() != 0 {
		t.Errorf("%d live sessions counted", r.Counters().Live())
	}
	if err := r.Healthy(); err != nil {
		t.Errorf("Healthy() = %v", err)
	}
	if es := seen[any](ev, nil); len(es) != 0 {
		t.Errorf("session event %T of a forward", es[0])
	}
	if logs.FilterMessage("forward started").FilterField(zap.String("rule", "rules:4:2")).Len() != 1 {
		t.Errorf("no \"forward started\" line with its rule: %v", logs.All())
	}
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if f.Key == "client" || f.Key == "client_addr" {
				t.Errorf("a forward's log line has a client field: %s %v", e.Message, e.Context)
			}
		}
	}
}
