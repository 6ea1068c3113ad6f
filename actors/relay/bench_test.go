package relay_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/racecheck"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// batchEcho is an upstream that echoes every datagram with batched I/O, so
// that the benchmark measures the relay rather than the echo.
func batchEcho(tb testing.TB) netip.AddrPort {
	tb.Helper()
	c, err := udpio.Listen(netip.MustParseAddrPort("127.0.0.1:0"), udpio.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			b := udpio.GetBatch()
			if err := c.ReadBatch(b); err != nil {
				b.Release()
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			c.WriteBatch(b, b.Datagrams)
			b.Release()
		}
	}()
	tb.Cleanup(func() { c.Close(); <-done })
	return c.LocalAddr()
}

// benchClients opens n client IDs through r from one batched socket and
// returns the socket and one 64-datagram batch template per round.
func benchClients(tb testing.TB, r *relay.Relay, n, size int) (*udpio.Conn, [][]byte) {
	tb.Helper()
	// Without GSO: loopback hands a GSO message of several client IDs to
	// the socket lookup whole, steered by its first datagram's ID, and the
	// others would reach a worker that has no session for them.
	c, err := udpio.Listen(netip.MustParseAddrPort("127.0.0.1:0"), udpio.Options{NoGSO: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	to := r.ListenAddrs()[0]
	var tmpl [][]byte
	for i := 0; i < n; i++ {
		id := wgproto.ClientID{0x10, byte(i >> 8), byte(i)}
		roundTrip(tb, c, to, [][]byte{wgtest.Initiation(id, uint32(i))})
	}
	for i := 0; i < udpio.MaxBatch; i++ {
		id := wgproto.ClientID{0x10, byte((i % n) >> 8), byte(i % n)}
		tmpl = append(tmpl, wgtest.Transport(id, 1, uint64(i), size))
	}
	return c, tmpl
}

// roundTrip sends ds in one sendmmsg and reads until as many come back.
func roundTrip(tb testing.TB, c *udpio.Conn, to netip.AddrPort, ds [][]byte) {
	out := udpio.GetBatch()
	for _, d := range ds {
		buf := udpio.GetBuffer()
		copy(buf[:], d)
		out.Add(udpio.Datagram{Buf: buf, N: len(d), Addr: to})
	}
	c.WriteBatch(out, out.Datagrams)
	out.Release()
	in := udpio.GetBatch()
	defer in.Release()
	for got := 0; got < len(ds); {
		if err := c.ReadBatch(in); err != nil {
			tb.Fatal(err)
		}
		got += len(in.Datagrams)
	}
}

// BenchmarkRelayRoundTrip moves batches of 64 datagrams from 8 clients
// through the whole actor path and back: listener, supervisor, sessions,
// upstream echo, sessions, writer. One op is one batch round trip.
func BenchmarkRelayRoundTrip(b *testing.B) {
	for _, size := range []int{64, 1392} {
		b.Run("size="+strconv.Itoa(size), func(b *testing.B) {
			r, err := relay.Start(relayConfig(b, batchEcho(b), nil, "127.0.0.1:0"), zap.NewNop())
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			c, tmpl := benchClients(b, r, 8, size)
			to := r.ListenAddrs()[0]
			b.ReportAllocs()
			b.SetBytes(int64(size * len(tmpl)))
			for b.Loop() {
				roundTrip(b, c, to, tmpl)
			}
			b.ReportMetric(float64(b.N*len(tmpl))/b.Elapsed().Seconds(), "datagrams/s")
		})
	}
}

// rss returns the process's resident set in bytes.
func rss(tb testing.TB) int64 {
	s, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(s), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS")
	return 0
}

// BenchmarkIdleSessions opens 10 000 sessions and reports the memory they
// hold while idle (the target is at most 150 MB for 10 000).
func BenchmarkIdleSessions(b *testing.B) {
	const n = 10000
	for b.Loop() {
		up := newUpstreamTB(b)
		// All from one address: its new-session rate must allow them.
		r, err := relay.Start(relayConfig(b, up, func(c *config.Relay) {
			c.Security.NewSessionsPerIP, c.Security.NewSessionsPerIPBurst = 1e6, 1e6
		}, "127.0.0.1:0"), zap.NewNop())
		if err != nil {
			b.Fatal(err)
		}
		c, err := udpio.Listen(netip.MustParseAddrPort("127.0.0.1:0"), udpio.Options{})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		before := rss(b)
		to := r.ListenAddrs()[0]
		// The relay admits limits.AdmissionRate new sessions a second (after
		// a burst); those refused over it are sent again, in rounds, until
		// all are open. Initiations of open sessions only go upstream.
		deadline := time.Now().Add(60 * time.Second)
		for r.Counters().Live() < n && time.Now().Before(deadline) {
			for i := 0; i < n; i += udpio.MaxBatch {
				out := udpio.GetBatch()
				for j := i; j < min(i+udpio.MaxBatch, n); j++ {
					buf := udpio.GetBuffer()
					init := wgtest.Initiation(wgproto.ClientID{0x20, byte(j >> 8), byte(j)}, uint32(j))
					copy(buf[:], init)
					out.Add(udpio.Datagram{Buf: buf, N: len(init), Addr: to})
				}
				c.WriteBatch(out, out.Datagrams)
				out.Release()
				time.Sleep(time.Second * udpio.MaxBatch / limits.AdmissionRate) // the budget's pace
			}
		}
		if live := r.Counters().Live(); live != n {
			b.Fatalf("%d sessions open, want %d", live, n)
		}
		runtime.GC()
		after := rss(b)
		b.ReportMetric(float64(after-before)/(1<<20), "MB/10k-sessions")
		b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
		c.Close()
		r.Close()
	}
}

// newUpstreamTB is a silent upstream that only drains its socket.
func newUpstreamTB(tb testing.TB) netip.AddrPort {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
		}
	}()
	tb.Cleanup(func() { c.Close() })
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestRelayPathAllocs: in steady state a datagram allocates nothing on its
// whole way through the relay and back (the acceptance guard for the
// throughput work: it fails on any per-datagram allocation).
func TestRelayPathAllocs(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("sync.Pool drops items under -race; the README's test command runs this guard without -race")
	}
	r, err := relay.Start(relayConfig(t, batchEcho(t), nil, "127.0.0.1:0"), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, tmpl := benchClients(t, r, 8, 208)
	to := r.ListenAddrs()[0]
	for range 100 {
		roundTrip(t, c, to, tmpl)
	}
	perBatch := testing.AllocsPerRun(500, func() { roundTrip(t, c, to, tmpl) })
	if perDatagram := perBatch / float64(len(tmpl)); perDatagram != 0 {
		t.Fatalf("%v allocations per batch of %d round trips", perBatch, len(tmpl))
	}
}

// BenchmarkRelayPingPong sends one datagram at a time through the relay
// and waits for its echo: ns/op is the round-trip time through udpfwd.
func BenchmarkRelayPingPong(b *testing.B) {
	r, err := relay.Start(relayConfig(b, batchEcho(b), nil, "127.0.0.1:0"), zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	c, tmpl := benchClients(b, r, 1, 208)
	to := r.ListenAddrs()[0]
	one := tmpl[:1]
	b.ReportAllocs()
	for b.Loop() {
		roundTrip(b, c, to, one)
	}
}
