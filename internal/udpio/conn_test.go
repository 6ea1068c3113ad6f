package udpio_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/udpfwd/udpfwd/internal/racecheck"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/udpio"
)

// testTimeout bounds every wait for a datagram that should come. It only
// costs time when a test fails, so it is generous: a -race run on two busy
// cores can be slow by seconds.
const testTimeout = 30 * time.Second

func listen(t *testing.T, addr string) *udpio.Conn {
	t.Helper()
	c, err := udpio.Listen(netip.MustParseAddrPort(addr), udpio.Options{})
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readWithin reads one batch or fails the test after testTimeout.
func readWithin(t *testing.T, c *udpio.Conn) *udpio.Batch {
	t.Helper()
	type result struct {
		b   *udpio.Batch
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b := udpio.GetBatch()
		err := c.ReadBatch(b)
		ch <- result{b, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("ReadBatch: %v", r.err)
		}
		return r.b
	case <-time.After(testTimeout):
		c.Close()
		t.Fatal("ReadBatch: timed out")
		return nil
	}
}

func TestBatchRoundTrip(t *testing.T) {
	for _, tt := range []struct{ name, server, client, dial string }{
		{"ipv4", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1"},
		{"ipv6", "[::1]:0", "[::1]:0", "::1"},
		{"dual-stack server, ipv4 client", "[::]:0", "127.0.0.1:0", "127.0.0.1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := listen(t, tt.server)
			cli := listen(t, tt.client)
			to := netip.AddrPortFrom(netip.MustParseAddr(tt.dial), srv.LocalAddr().Port())

			// Client -> server: a batch of different sizes, one sendmmsg.
			out := udpio.GetBatch()
			sizes := []int{1, 64, 208, 1392, udpio.BufferSize}
			for i, n := range sizes {
				buf := udpio.GetBuffer()
				for j := 0; j < n; j++ {
					buf[j] = byte(i + j)
				}
				out.Add(udpio.Datagram{Buf: buf, N: n, Addr: to})
			}
			sent, failed, err := cli.WriteBatch(out, out.Datagrams)
			if sent != len(sizes) || failed != 0 || err != nil {
				t.Fatalf("WriteBatch = %d, %d, %v", sent, failed, err)
			}
			out.Release()

			var got [][]byte
			var from netip.AddrPort
			for len(got) < len(sizes) {
				b := readWithin(t, srv)
				for i := range b.Datagrams {
					got = append(got, bytes.Clone(b.Datagrams[i].Bytes()))
					from = b.Datagrams[i].Addr
					if b.Datagrams[i].Truncated {
						t.Errorf("datagram %d marked truncated", i)
					}
				}
				b.Release()
			}
			for i, n := range sizes {
				if len(got[i]) != n || (n > 0 && got[i][n-1] != byte(i+n-1)) {
					t.Fatalf("datagram %d: got %d bytes, want %d intact", i, len(got[i]), n)
				}
			}
			if from.Port() != cli.LocalAddr().Port() || !from.Addr().Unmap().IsLoopback() {
				t.Fatalf("source %v, want the client's port %d", from, cli.LocalAddr().Port())
			}

			// Server -> client, addressed to the source it saw (IPv4-mapped
			// on the dual-stack socket).
			back := udpio.GetBatch()
			buf := udpio.GetBuffer()
			copy(buf[:], "pong")
			back.Add(udpio.Datagram{Buf: buf, N: 4, Addr: from})
			if sent, _, err := srv.WriteBatch(back, back.Datagrams); sent != 1 {
				t.Fatalf("reply not sent: %v", err)
			}
			back.Release()
			b := readWithin(t, cli)
			if string(b.Datagrams[0].Bytes()) != "pong" {
				t.Fatalf("reply %q", b.Datagrams[0].Bytes())
			}
			b.Release()
		})
	}
}

func TestTruncated(t *testing.T) {
	srv := listen(t, "127.0.0.1:0")
	cli, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(srv.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Write(make([]byte, udpio.BufferSize+1)); err != nil {
		t.Fatal(err)
	}
	b := readWithin(t, srv)
	defer b.Release()
	if !b.Datagrams[0].Truncated {
		t.Fatal("an oversize datagram was not marked truncated")
	}
}

func TestDialFiltersForeignSources(t *testing.T) {
	upstream := listen(t, "127.0.0.1:0")
	c, err := udpio.Dial(context.Background(), netip.AddrPort{}, upstream.LocalAddr(), udpio.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.RemoteAddr() != upstream.LocalAddr() {
		t.Fatalf("remote %v", c.RemoteAddr())
	}
	// A stranger writes to the dialled socket first, then the upstream.
	stranger, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(c.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	stranger.Write([]byte("forged"))
	b := udpio.GetBatch()
	buf := udpio.GetBuffer()
	copy(buf[:], "real")
	b.Add(udpio.Datagram{Buf: buf, N: 4, Addr: c.LocalAddr()})
	if sent, _, err := upstream.WriteBatch(b, b.Datagrams); sent != 1 {
		t.Fatal(err)
	}
	b.Release()
	got := readWithin(t, c)
	defer got.Release()
	if len(got.Datagrams) != 1 || string(got.Datagrams[0].Bytes()) != "real" {
		t.Fatalf("read %d datagrams, first %q; want only the upstream's", len(got.Datagrams), got.Datagrams[0].Bytes())
	}
}

func TestWaitReadableAndClose(t *testing.T) {
	c := listen(t, "127.0.0.1:0")
	done := make(chan error, 1)
	go func() { done <- c.WaitReadable() }()
	peer, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(c.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peer.Write([]byte("x"))
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WaitReadable: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("WaitReadable did not return for a queued datagram")
	}
	// The datagram is still there to read.
	b := readWithin(t, c)
	b.Release()

	go func() { done <- c.WaitReadable() }()
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("WaitReadable did not return after Close")
	}
}

func TestWriteBatchSkipsRefused(t *testing.T) {
	c := listen(t, "127.0.0.1:0")
	dst := listen(t, "127.0.0.1:0")
	b := udpio.GetBatch()
	defer b.Release()
	for i, to := range []netip.AddrPort{
		dst.LocalAddr(),
		netip.MustParseAddrPort("127.0.0.1:0"), // port 0: the kernel refuses it
		dst.LocalAddr(),
	} {
		buf := udpio.GetBuffer()
		buf[0] = byte(i)
		b.Add(udpio.Datagram{Buf: buf, N: 1, Addr: to})
	}
	sent, failed, err := c.WriteBatch(b, b.Datagrams)
	if sent != 2 || failed != 1 || err == nil {
		t.Fatalf("WriteBatch = %d sent, %d failed, %v; want 2, 1, an error", sent, failed, err)
	}
	got := 0
	for got < 2 {
		r := readWithin(t, dst)
		got += len(r.Datagrams)
		r.Release()
	}
}

func TestReadWriteAllocs(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("sync.Pool drops items under -race; the README's test command runs this guard without -race")
	}
	srv := listen(t, "127.0.0.1:0")
	cli := listen(t, "127.0.0.1:0")
	out := udpio.GetBatch()
	for i := 0; i < 8; i++ {
		out.Add(udpio.Datagram{Buf: udpio.GetBuffer(), N: 64, Addr: srv.LocalAddr()})
	}
	in := udpio.GetBatch()
	// Warm up the pools, then count.
	allocs := testing.AllocsPerRun(200, func() {
		if sent, _, err := cli.WriteBatch(out, out.Datagrams); sent != 8 {
			t.Fatal(err)
		}
		for n := 0; n < 8; {
			if err := srv.ReadBatch(in); err != nil {
				t.Fatal(err)
			}
			n += len(in.Datagrams)
		}
	})
	if allocs != 0 {
		t.Fatalf("a write+read of 8 datagrams allocates %v times, want 0", allocs)
	}
}

func BenchmarkWriteReadBatch(b *testing.B) {
	srv, _ := udpio.Listen(netip.MustParseAddrPort("127.0.0.1:0"), udpio.Options{})
	cli, _ := udpio.Listen(netip.MustParseAddrPort("127.0.0.1:0"), udpio.Options{})
	defer srv.Close()
	defer cli.Close()
	out := udpio.GetBatch()
	for i := 0; i < udpio.MaxBatch; i++ {
		out.Add(udpio.Datagram{Buf: udpio.GetBuffer(), N: 208, Addr: srv.LocalAddr()})
	}
	in := udpio.GetBatch()
	b.ReportAllocs()
	b.SetBytes(208 * udpio.MaxBatch)
	for b.Loop() {
		cli.WriteBatch(out, out.Datagrams)
		for n := 0; n < udpio.MaxBatch; {
			if err := srv.ReadBatch(in); err != nil {
				b.Fatal(err)
			}
			n += len(in.Datagrams)
		}
	}
	b.ReportMetric(float64(b.N*udpio.MaxBatch)/b.Elapsed().Seconds(), "datagrams/s")
}

// TestWriteBatchGSO: runs of same-size datagrams to one address go as one
// GSO message each, and arrive as the same datagrams, unchanged and in
// order; with NoGSO every datagram is its own message.
func TestWriteBatchGSO(t *testing.T) {
	type run struct {
		to   int // destination 0 or 1, or -1 for a refused address
		n    int
		size int
		last int // size of one more, shorter datagram ending the run (0: none)
	}
	runs := []run{
		{0, 20, 1392, 100}, // one message: a shorter last datagram ends it
		{1, 10, 64, 0},     // another destination: another message
		{-1, 3, 64, 0},     // refused as a run, then one by one
		{0, 5, 64, 0},
		{1, 25, 1392, 0}, // 25 × 1392 bytes: one message
	}
	const wantGSOMessages = 4 // one per run but the refused one
	wantPlain := 0
	for _, r := range runs {
		if r.to >= 0 {
			wantPlain += r.n + min(r.last, 1)
		}
	}
	for _, fam := range []struct{ name, any, loop, sender string }{
		{"ipv4", "127.0.0.1:0", "127.0.0.1", "127.0.0.1:0"},
		{"ipv6", "[::1]:0", "::1", "[::1]:0"},
		{"dual-stack sender, ipv4 receivers", "127.0.0.1:0", "127.0.0.1", "[::]:0"},
	} {
		for _, noGSO := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/NoGSO=%v", fam.name, noGSO), func(t *testing.T) {
				dst := []*udpio.Conn{listen(t, fam.any), listen(t, fam.any)}
				c, err := udpio.Listen(netip.MustParseAddrPort(fam.sender), udpio.Options{NoGSO: noGSO})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if !noGSO && !c.GSO() {
					t.Skip("this kernel has no UDP GSO")
				}
				b := udpio.GetBatch()
				defer b.Release()
				want := [2][][]byte{}
				seq := 0
				add := func(to, size int) {
					buf := udpio.GetBuffer()
					for j := range size {
						buf[j] = byte(seq*7 + j)
					}
					seq++
					addr := netip.AddrPortFrom(netip.MustParseAddr(fam.loop), 0) // port 0: refused
					if to >= 0 {
						addr = dst[to].LocalAddr()
						want[to] = append(want[to], bytes.Clone(buf[:size]))
					}
					b.Add(udpio.Datagram{Buf: buf, N: size, Addr: addr})
				}
				for _, r := range runs {
					for range r.n {
						add(r.to, r.size)
					}
					if r.last > 0 {
						add(r.to, r.last)
					}
				}
				sent, failed, err := c.WriteBatch(b, b.Datagrams)
				if sent != len(b.Datagrams)-3 || failed != 3 || err == nil {
					t.Fatalf("WriteBatch = %d sent, %d failed, %v; want %d, 3, an error", sent, failed, err, len(b.Datagrams)-3)
				}
				wantMessages := uint64(wantGSOMessages)
				if noGSO {
					wantMessages = uint64(wantPlain)
				}
				if got := c.Messages(); got != wantMessages {
					t.Errorf("%d messages handed to the kernel, want %d", got, wantMessages)
				}
				for k, d := range dst {
					var got [][]byte
					for len(got) < len(want[k]) {
						r := readWithin(t, d)
						for i := range r.Datagrams {
							got = append(got, bytes.Clone(r.Datagrams[i].Bytes()))
						}
						r.Release()
					}
					for i := range want[k] {
						if !bytes.Equal(got[i], want[k][i]) {
							t.Fatalf("destination %d, datagram %d: %d bytes, want %d, in order and unchanged", k, i, len(got[i]), len(want[k][i]))
						}
					}
					if extra, ok := tryRead(d); ok {
						t.Fatalf("destination %d got %d datagrams more than sent", k, extra)
					}
				}
			})
		}
	}
}

// TestGSORunLimits: a run is cut at 64 datagrams and at the IP length limit.
func TestGSORunLimits(t *testing.T) {
	dst := listen(t, "127.0.0.1:0")
	c := listen(t, "127.0.0.1:0")
	if !c.GSO() {
		t.Skip("this kernel has no UDP GSO")
	}
	for _, tt := range []struct {
		n, size      int
		wantMessages uint64
	}{
		{64, 32, 1},   // 64 segments: one message
		{64, 1392, 2}, // 89 KB: over 64 KB, two messages
		{47, 1392, 2}, // 65 424 bytes: just over the limit
		{46, 1392, 1},
	} {
		b := udpio.GetBatch()
		for range tt.n {
			b.Add(udpio.Datagram{Buf: udpio.GetBuffer(), N: tt.size, Addr: dst.LocalAddr()})
		}
		before := c.Messages()
		if sent, _, err := c.WriteBatch(b, b.Datagrams); sent != tt.n {
			t.Fatalf("%d × %d: sent %d: %v", tt.n, tt.size, sent, err)
		}
		b.Release()
		if got := c.Messages() - before; got != tt.wantMessages {
			t.Errorf("%d × %d bytes: %d messages, want %d", tt.n, tt.size, got, tt.wantMessages)
		}
		for n := 0; n < tt.n; {
			r := readWithin(t, dst)
			for i := range r.Datagrams {
				if r.Datagrams[i].N != tt.size {
					t.Fatalf("%d × %d: got a %d-byte datagram", tt.n, tt.size, r.Datagrams[i].N)
				}
			}
			n += len(r.Datagrams)
			r.Release()
		}
	}
}

// tryRead reports whether a datagram is queued on c, reading it.
func tryRead(c *udpio.Conn) (int, bool) {
	ch := make(chan int, 1)
	go func() {
		if c.WaitReadable() == nil {
			b := udpio.GetBatch()
			if c.ReadBatch(b) == nil {
				ch <- len(b.Datagrams)
			}
			b.Release()
		}
	}()
	select {
	case n := <-ch:
		return n, true
	case <-time.After(50 * time.Millisecond):
		return 0, false
	}
}
