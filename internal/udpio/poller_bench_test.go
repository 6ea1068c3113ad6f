package udpio_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/udpfwd/udpfwd/internal/udpio"
)

// The benchmarks in this file compare ways to read many connected sockets
// (a worker's upstream sockets) in one run:
//
//	go test -run '^$' -bench 'Readers' -benchtime 2s ./internal/udpio
//	go test -run '^$' -bench 'IdleSockets' -benchtime 1x ./internal/udpio
//
// "goroutines" is what a session does today: a reader goroutine per
// socket, waiting in WaitReadable and reading with ReadBatch. The others
// are a Poller in each PollMode. Every reader hands each batch to the same
// handler, which counts and releases it.

// readerKinds lists what the benchmarks compare.
var readerKinds = []struct {
	name string
	poll *udpio.PollerConfig // nil: a goroutine per socket
}{
	{"goroutines", nil},
	{"netpoller", &udpio.PollerConfig{Mode: udpio.PollNetpoller}},
	{"blocking", &udpio.PollerConfig{Mode: udpio.PollBlocking}},
	{"blocking-locked", &udpio.PollerConfig{Mode: udpio.PollBlocking, LockThread: true}},
}

// readers reads a set of connected sockets one way and hands every batch
// to handle.
type readers struct {
	poller  *udpio.Poller[int]
	wg      sync.WaitGroup
	waiting sync.WaitGroup // goroutines: done when each has reached its first wait
	conns   []*udpio.Conn
}

func startReaders(tb testing.TB, cfg *udpio.PollerConfig, conns []*udpio.Conn, handle func(owner int, b *udpio.Batch)) *readers {
	tb.Helper()
	r := &readers{conns: conns}
	if cfg != nil {
		p, err := udpio.NewPoller(*cfg, func(rd *udpio.Ready[int]) {
			if rd.Batch != nil {
				handle(rd.Owner, rd.Batch)
			}
		})
		if err != nil {
			tb.Fatal(err)
		}
		r.poller = p
		for i, c := range conns {
			if _, err := p.Add(c, i); err != nil {
				tb.Fatal(err)
			}
		}
		return r
	}
	r.waiting.Add(len(conns))
	for i, c := range conns {
		r.wg.Add(1)
		go func() { // as actors/session's reader does
			defer r.wg.Done()
			r.waiting.Done()
			for {
				if err := c.WaitReadable(); err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue
				}
				for {
					b := udpio.GetBatch()
					if err := c.ReadBatch(b); err != nil {
						b.Release()
						if errors.Is(err, net.ErrClosed) {
							return
						}
						break
					}
					n := len(b.Datagrams)
					handle(i, b)
					if n < udpio.MaxBatch {
						break
					}
				}
			}
		}()
	}
	return r
}

// stop ends the readers and closes their sockets.
func (r *readers) stop() {
	if r.poller != nil {
		r.poller.Close()
	}
	for _, c := range r.conns {
		c.Close()
	}
	r.wg.Wait()
}

// upstreams opens n sockets connected to one peer, as a worker's sessions'
// upstream sockets are connected to the upstream.
func upstreams(tb testing.TB, n int, peer netip.AddrPort) []*udpio.Conn {
	tb.Helper()
	conns := make([]*udpio.Conn, n)
	for i := range conns {
		c, err := udpio.Dial(context.Background(), netip.AddrPort{}, peer, udpio.Options{ReadBuffer: 1 << 18, WriteBuffer: 1 << 16})
		if err != nil {
			tb.Fatalf("socket %d of %d: %v", i+1, n, err)
		}
		conns[i] = c
	}
	return conns
}

// threadCPU is the calling thread's user+system time.
func threadCPU() time.Duration { return rusage(unix.RUSAGE_THREAD) }

// processCPU is the whole process's user+system time.
func processCPU() time.Duration { return rusage(unix.RUSAGE_SELF) }

func rusage(who int) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(who, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReadersThroughput: 64 sockets with traffic, 8 datagrams to each
// per operation. The benchmark goroutine sends (on its own locked thread,
// whose CPU is subtracted); rx-cpu-ns/dgram is what the readers cost.
func BenchmarkReadersThroughput(b *testing.B) {
	const active, each = 64, 8
	for _, k := range readerKinds {
		b.Run(k.name, func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			peer, err := udpio.Listen(netip.MustParseAddrPort("127.0.0.1:0"), udpio.Options{NoGSO: true})
			if err != nil {
				b.Fatal(err)
			}
			defer peer.Close()
			conns := upstreams(b, active, peer.LocalAddr())
			var got atomic.Int64
			var want atomic.Int64
			done := make(chan struct{}, 1)
			r := startReaders(b, k.poll, conns, func(_ int, batch *udpio.Batch) {
				if got.Add(int64(len(batch.Datagrams))) == want.Load() {
					done <- struct{}{}
				}
				batch.Release()
			})
			defer r.stop()
			out := udpio.GetBatch()
			defer out.Release()
			for i := 0; i < udpio.MaxBatch; i++ {
				out.Add(udpio.Datagram{Buf: udpio.GetBuffer(), N: 64, Addr: conns[i%active].LocalAddr()})
			}
			timeout := time.NewTimer(testTimeout)
			defer timeout.Stop()
			b.ReportAllocs()
			b.SetBytes(64 * active * each)
			t0, p0 := threadCPU(), processCPU()
			for b.Loop() {
				want.Add(active * each)
				for range active * each / udpio.MaxBatch {
					if sent, _, err := peer.WriteBatch(out, out.Datagrams); sent != len(out.Datagrams) {
						b.Fatalf("sent %d: %v", sent, err)
					}
				}
				timeout.Reset(testTimeout)
				select {
				case <-done:
				case <-timeout.C:
					b.Fatalf("received %d of %d", got.Load(), want.Load())
				}
			}
			sender, total := threadCPU()-t0, processCPU()-p0
			n := float64(b.N * active * each)
			b.ReportMetric(float64((total-sender).Nanoseconds())/n, "rx-cpu-ns/dgram")
			b.ReportMetric(float64(total.Nanoseconds())/n, "cpu-ns/dgram")
			b.ReportMetric(n/b.Elapsed().Seconds(), "dgrams/s")
		})
	}
}

// BenchmarkReadersPingPong: one datagram at a time to one socket, among
// 1 000 idle ones; the time from the send until the benchmark goroutine
// hears from the handler, p50 and p99, and the process's CPU per round
// (send, wake-ups, read, hand-off).
func BenchmarkReadersPingPong(b *testing.B) {
	const idle = 1000
	for _, k := range readerKinds {
		b.Run(k.name, func(b *testing.B) {
			peer, err := udpio.Listen(netip.MustParseAddrPort("127.0.0.1:0"), udpio.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer peer.Close()
			conns := upstreams(b, idle+1, peer.LocalAddr())
			arrived := make(chan struct{}, 1)
			r := startReaders(b, k.poll, conns, func(_ int, batch *udpio.Batch) {
				batch.Release()
				arrived <- struct{}{}
			})
			defer r.stop()
			out := udpio.GetBatch()
			defer out.Release()
			out.Add(udpio.Datagram{Buf: udpio.GetBuffer(), N: 64, Addr: conns[idle/2].LocalAddr()})
			lat := make([]time.Duration, 0, 1<<16)
			timeout := time.NewTimer(testTimeout)
			defer timeout.Stop()
			b.ReportAllocs()
			p0 := processCPU()
			for b.Loop() {
				start := time.Now()
				if sent, _, err := peer.WriteBatch(out, out.Datagrams); sent != 1 {
					b.Fatal(err)
				}
				timeout.Reset(testTimeout)
				select {
				case <-arrived:
				case <-timeout.C:
					b.Fatal("the datagram did not arrive")
				}
				if len(lat) < cap(lat) {
					lat = append(lat, time.Since(start))
				}
			}
			total := processCPU() - p0
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// idleResult is what TestIdleSocketsChild prints.
type idleResult struct {
	Sockets          int     `json:"sockets"`
	SocketsKB        float64 `json:"sockets_kb"`        // VmRSS added by opening the sockets
	ReadersKB        float64 `json:"readers_kb"`        // VmRSS added by attaching the readers
	GoroutinesBefore int     `json:"goroutines_before"` // before the readers
	GoroutinesAfter  int     `json:"goroutines_after"`  // with the readers
	Delivered        bool    `json:"delivered"`         // a datagram to one socket reached the handler
}

// BenchmarkIdleSockets: VmRSS per idle socket, 10 000 sockets, each way of
// reading them measured in a fresh process (VmRSS rarely shrinks, so two
// measurements in one process would disturb each other). Run it with
// -benchtime 1x.
func BenchmarkIdleSockets(b *testing.B) {
	const n = 10000
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Max < n+256 {
		b.Skipf("open-file limit %d: %d sockets need more", lim.Max, n)
	}
	for _, k := range readerKinds {
		b.Run(k.name, func(b *testing.B) {
			var res idleResult
			for b.Loop() {
				res = runIdleChild(b, k.name, n)
			}
			if !res.Delivered {
				b.Fatal("the readers did not deliver a datagram")
			}
			b.ReportMetric(res.SocketsKB*1024/float64(n), "socket-B/socket")
			b.ReportMetric(res.ReadersKB*1024/float64(n), "reader-B/socket")
			b.ReportMetric(float64(res.GoroutinesAfter-res.GoroutinesBefore), "goroutines")
		})
	}
}

func runIdleChild(b *testing.B, kind string, n int) idleResult {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestIdleSocketsChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("UDPIO_IDLE_CHILD=%s,%d", kind, n))
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("child: %v\n%s", err, out)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "IDLE: "); ok {
			var res idleResult
			if err := json.Unmarshal([]byte(line), &res); err != nil {
				b.Fatal(err)
			}
			return res
		}
	}
	b.Fatalf("child printed no result:\n%s", out)
	return idleResult{}
}

// TestIdleSocketsChild is BenchmarkIdleSockets's child process; it does
// nothing in a normal run.
func TestIdleSocketsChild(t *testing.T) {
	spec := os.Getenv("UDPIO_IDLE_CHILD")
	if spec == "" {
		t.Skip("runs only as BenchmarkIdleSockets's child")
	}
	kindName, count, _ := strings.Cut(spec, ",")
	n, err := strconv.Atoi(count)
	if err != nil {
		t.Fatal(err)
	}
	var cfg *udpio.PollerConfig
	found := false
	for _, k := range readerKinds {
		if k.name == kindName {
			cfg, found = k.poll, true
		}
	}
	if !found {
		t.Fatalf("unknown reader kind %q", kindName)
	}
	peer := listen(t, "127.0.0.1:0")
	res := idleResult{Sockets: n}
	rss0 := vmRSSKB(t)
	conns := upstreams(t, n, peer.LocalAddr())
	rss1 := vmRSSKB(t)
	res.GoroutinesBefore = runtime.NumGoroutine()
	arrived := make(chan int, 1)
	r := startReaders(t, cfg, conns, func(owner int, b *udpio.Batch) {
		b.Release()
		arrived <- owner
	})
	defer r.stop()
	r.waiting.Wait()
	// Check that the readers work.
	out := udpio.GetBatch()
	out.Add(udpio.Datagram{Buf: udpio.GetBuffer(), N: 32, Addr: conns[n-1].LocalAddr()})
	peer.WriteBatch(out, out.Datagrams)
	out.Release()
	select {
	case owner := <-arrived:
		res.Delivered = owner == n-1
	case <-time.After(testTimeout):
	}
	res.GoroutinesAfter = runtime.NumGoroutine()
	rss2 := vmRSSKB(t)
	res.SocketsKB, res.ReadersKB = float64(rss1-rss0), float64(rss2-rss1)
	line, _ := json.Marshal(res)
	fmt.Println("IDLE: " + string(line))
}

// vmRSSKB returns the process's resident set as the kernel reports it,
// after a collection.
func vmRSSKB(t *testing.T) int {
	runtime.GC()
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return kb
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}
