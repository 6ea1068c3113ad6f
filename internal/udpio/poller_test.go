package udpio_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/udpfwd/udpfwd/internal/racecheck"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// pollModes are the loop designs every poller test runs with.
var pollModes = []struct {
	name string
	cfg  udpio.PollerConfig
}{
	{"netpoller", udpio.PollerConfig{Mode: udpio.PollNetpoller}},
	{"blocking", udpio.PollerConfig{Mode: udpio.PollBlocking}},
	{"blocking-locked", udpio.PollerConfig{Mode: udpio.PollBlocking, LockThread: true}},
}

// delivery is one handler call as a test saw it.
type delivery struct {
	owner    int
	payloads [][]byte
	trunc    []bool
	foreign  int
	err      error
	removed  bool
}

// recorder is a handler that copies each Ready onto a channel and releases
// the batch.
func recorder(ch chan<- delivery) func(*udpio.Ready[int]) {
	return func(r *udpio.Ready[int]) {
		d := delivery{owner: r.Owner, foreign: r.Foreign, err: r.Err, removed: r.Removed}
		if r.Batch != nil {
			for i := range r.Batch.Datagrams {
				d.payloads = append(d.payloads, append([]byte(nil), r.Batch.Datagrams[i].Bytes()...))
				d.trunc = append(d.trunc, r.Batch.Datagrams[i].Truncated)
			}
			r.Batch.Release()
		}
		ch <- d
	}
}

func newPoller[T any](t *testing.T, cfg udpio.PollerConfig, h func(*udpio.Ready[T])) *udpio.Poller[T] {
	t.Helper()
	p, err := udpio.NewPoller(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// dialPeer opens a connected Conn to peer, closed at the end of the test.
func dialPeer(t *testing.T, peer netip.AddrPort) *udpio.Conn {
	t.Helper()
	c, err := udpio.Dial(context.Background(), netip.AddrPort{}, peer, udpio.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// next waits for one delivery.
func next(t *testing.T, ch <-chan delivery) delivery {
	t.Helper()
	select {
	case d := <-ch:
		return d
	case <-time.After(testTimeout):
		t.Fatal("no delivery from the poller")
		return delivery{}
	}
}

// sendTo writes each payload from peer to c's address.
func sendTo(t *testing.T, peer *net.UDPConn, c *udpio.Conn, payloads ...[]byte) {
	t.Helper()
	to := net.UDPAddrFromAddrPort(c.LocalAddr())
	for _, p := range payloads {
		if _, err := peer.WriteToUDP(p, to); err != nil {
			t.Fatal(err)
		}
	}
}

func udpPeer(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func TestPollerDelivers(t *testing.T) {
	for _, m := range pollModes {
		t.Run(m.name, func(t *testing.T) {
			ch := make(chan delivery, 256)
			p := newPoller(t, m.cfg, recorder(ch))
			const n = 16
			peers := map[int]*net.UDPConn{}
			conns := map[int]*udpio.Conn{}
			for i := 0; i < n; i++ {
				host := "127.0.0.1:0"
				if i%2 == 1 {
					host = "[::1]:0"
				}
				peers[i] = udpPeer(t, host)
				conns[i] = dialPeer(t, peers[i].LocalAddr().(*net.UDPAddr).AddrPort())
				if _, err := p.Add(conns[i], i); err != nil {
					t.Fatal(err)
				}
			}
			if p.Len() != n {
				t.Fatalf("Len() = %d, want %d", p.Len(), n)
			}
			for i := 0; i < n; i++ {
				sendTo(t, peers[i], conns[i], []byte(fmt.Sprintf("to %d", i)), make([]byte, udpio.BufferSize+1))
			}
			got := map[int][]string{}
			truncated := map[int]int{}
			for count := 0; count < 2*n; {
				d := next(t, ch)
				if d.err != nil {
					t.Fatalf("owner %d: %v", d.owner, d.err)
				}
				for j, pl := range d.payloads {
					if d.trunc[j] {
						truncated[d.owner]++
					} else {
						got[d.owner] = append(got[d.owner], string(pl))
					}
					count++
				}
			}
			for i := 0; i < n; i++ {
				if len(got[i]) != 1 || got[i][0] != fmt.Sprintf("to %d", i) {
					t.Errorf("owner %d got %q, want only its own datagram", i, got[i])
				}
				if truncated[i] != 1 {
					t.Errorf("owner %d: %d oversize datagrams marked truncated, want 1", i, truncated[i])
				}
			}
		})
	}
}

// TestPollerFairness: a socket with many datagrams queued gets one batch per
// round, so another ready socket is served before its second batch.
func TestPollerFairness(t *testing.T) {
	for _, m := range pollModes {
		t.Run(m.name, func(t *testing.T) {
			release := make(chan struct{})
			var calls []int // owners in call order; loop-owned until the end
			done := make(chan struct{})
			var once sync.Once
			h := func(r *udpio.Ready[int]) {
				if len(calls) == 0 {
					<-release // hold the loop while the test queues datagrams
				}
				for range len(r.Batch.Datagrams) {
					calls = append(calls, r.Owner)
				}
				r.Batch.Release()
				if len(calls) == 641 {
					once.Do(func() { close(done) })
				}
			}
			p := newPoller(t, m.cfg, h)
			peerA, peerB := udpPeer(t, "127.0.0.1:0"), udpPeer(t, "127.0.0.1:0")
			a := dialPeer(t, peerA.LocalAddr().(*net.UDPAddr).AddrPort())
			b := dialPeer(t, peerB.LocalAddr().(*net.UDPAddr).AddrPort())
			p.Add(a, 0)
			p.Add(b, 1)
			sendTo(t, peerA, a, []byte("first"))
			// The first delivery blocks in the handler; meanwhile A gets
			// 639 more and B one.
			flood := make([][]byte, 639)
			for i := range flood {
				flood[i] = []byte("a")
			}
			waitQueued(t, a, 0) // the loop has read "first"
			sendTo(t, peerA, a, flood...)
			sendTo(t, peerB, b, []byte("b"))
			close(release)
			select {
			case <-done:
			case <-time.After(testTimeout):
				t.Fatal("not every datagram was delivered")
			}
			// calls: "first", then one round with A's batch and B's.
			firstB := -1
			for i, o := range calls {
				if o == 1 {
					firstB = i
					break
				}
			}
			if firstB < 0 || firstB > 1+udpio.MaxBatch {
				t.Fatalf("B's datagram was delivered after %d of A's: want it within the first round (at most %d)", firstB, 1+udpio.MaxBatch)
			}
		})
	}
}

// waitQueued waits until c's receive queue holds exactly want bytes
// (SIOCINQ), so a test can tell that the poller took a datagram.
func waitQueued(t *testing.T, c *udpio.Conn, want int) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		n, err := udpio.QueuedBytes(c)
		if err != nil {
			t.Fatal(err)
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes queued, want %d", n, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPollerTokens: a removed token stays dead when its slot is reused, and
// a removed socket's datagrams reach nobody until it is added again.
func TestPollerTokens(t *testing.T) {
	for _, m := range pollModes {
		t.Run(m.name, func(t *testing.T) {
			ch := make(chan delivery, 16)
			p := newPoller(t, m.cfg, recorder(ch))
			peer := udpPeer(t, "127.0.0.1:0")
			peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()
			c1, c2 := dialPeer(t, peerAddr), dialPeer(t, peerAddr)
			tok1, err := p.Add(c1, 1)
			if err != nil || tok1 == 0 {
				t.Fatalf("Add = %v, %v", tok1, err)
			}
			if !p.Remove(tok1) {
				t.Fatal("Remove of a registered token reported false")
			}
			if p.Remove(tok1) {
				t.Fatal("a second Remove of the same token reported true")
			}
			tok2, err := p.Add(c2, 2)
			if err != nil {
				t.Fatal(err)
			}
			if tok2 == tok1 {
				t.Fatalf("the slot's new registration reuses token %x", tok1)
			}
			if p.Remove(tok1) || p.Len() != 1 {
				t.Fatalf("a stale token removed the slot's new registration (Len %d)", p.Len())
			}
			sendTo(t, peer, c1, []byte("to the removed one"))
			sendTo(t, peer, c2, []byte("to two"))
			if d := next(t, ch); d.owner != 2 || string(d.payloads[0]) != "to two" {
				t.Fatalf("delivery to owner %d %q, want owner 2 only", d.owner, d.payloads)
			}
			// Added again, c1's queued datagram arrives with its new owner.
			tok3, err := p.Add(c1, 3)
			if err != nil || tok3 == tok1 {
				t.Fatalf("Add again = %x, %v", tok3, err)
			}
			if d := next(t, ch); d.owner != 3 || string(d.payloads[0]) != "to the removed one" {
				t.Fatalf("delivery to owner %d %q, want owner 3", d.owner, d.payloads)
			}
		})
	}
}

// TestPollerClosedConnFDReused: a Conn closed while registered, whose
// descriptor number the kernel gives to the next socket, costs that socket
// nothing: removing the old token does not touch the new registration.
func TestPollerClosedConnFDReused(t *testing.T) {
	for _, m := range pollModes {
		t.Run(m.name, func(t *testing.T) {
			ch := make(chan delivery, 16)
			p := newPoller(t, m.cfg, recorder(ch))
			peer := udpPeer(t, "127.0.0.1:0")
			peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()
			old := dialPeer(t, peerAddr)
			oldTok, err := p.Add(old, 1)
			if err != nil {
				t.Fatal(err)
			}
			oldFD := udpio.FD(old)
			old.Close()
			fresh := dialPeer(t, peerAddr)
			if udpio.FD(fresh) != oldFD {
				t.Logf("the kernel gave the new socket descriptor %d, not %d: the reuse case did not arise", udpio.FD(fresh), oldFD)
			}
			if _, err := p.Add(fresh, 2); err != nil {
				t.Fatal(err)
			}
			if !p.Remove(oldTok) {
				t.Fatal("Remove of the closed Conn's token reported false")
			}
			sendTo(t, peer, fresh, []byte("fresh"))
			if d := next(t, ch); d.owner != 2 || string(d.payloads[0]) != "fresh" {
				t.Fatalf("delivery to owner %d %q, want owner 2", d.owner, d.payloads)
			}
		})
	}
}

// TestPollerTransientError: an ICMP port unreachable is reported as
// ECONNREFUSED and the socket stays registered; a datagram from a peer that
// comes back on the same port arrives.
func TestPollerTransientError(t *testing.T) {
	for _, m := range pollModes {
		t.Run(m.name, func(t *testing.T) {
			ch := make(chan delivery, 16)
			p := newPoller(t, m.cfg, recorder(ch))
			peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()
			c := dialPeer(t, peerAddr)
			tok, err := p.Add(c, 7)
			if err != nil {
				t.Fatal(err)
			}
			peer.Close()
			b := udpio.GetBatch()
			b.Add(udpio.Datagram{Buf: udpio.GetBuffer(), N: 8})
			c.WriteAll(b)
			b.Release()
			d := next(t, ch)
			if !errors.Is(d.err, syscall.ECONNREFUSED) || d.removed || d.owner != 7 {
				t.Fatalf("delivery %+v, want ECONNREFUSED for owner 7, still registered", d)
			}
			back, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(peerAddr))
			if err != nil {
				t.Skipf("the peer's port was taken meanwhile: %v", err)
			}
			defer back.Close()
			sendTo(t, back, c, []byte("back"))
			if d := next(t, ch); d.err != nil || d.owner != 7 || string(d.payloads[0]) != "back" {
				t.Fatalf("after the error: %+v, want the datagram for owner 7", d)
			}
			if !p.Remove(tok) {
				t.Fatal("the socket was dropped after a transient error")
			}
		})
	}
}

// TestPollerChurn: many sockets with traffic while sessions close their
// sockets (with Remove before or after Close, or Close alone until their
// next event) and open new ones. No datagram reaches another owner, no
// handler call starts after its owner's Remove returned (Settle waits for
// one under way, which Remove does not), and Close leaves no goroutine.
func TestPollerChurn(t *testing.T) {
	for _, m := range pollModes {
		t.Run(m.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			type session struct {
				id      int
				conn    *udpio.Conn
				tok     udpio.PollToken
				removed atomic.Bool
			}
			var (
				violations atomic.Int64
				closedP    atomic.Bool
				firstOnce  sync.Once
			)
			first := make(chan struct{})
			h := func(r *udpio.Ready[*session]) {
				s := r.Owner
				if closedP.Load() || s.removed.Load() {
					violations.Add(1)
				}
				if r.Batch != nil {
					for i := range r.Batch.Datagrams {
						pl := r.Batch.Datagrams[i].Bytes()
						if len(pl) < 4 || int(pl[0])<<24|int(pl[1])<<16|int(pl[2])<<8|int(pl[3]) != s.id {
							violations.Add(1)
						}
					}
					firstOnce.Do(func() { close(first) })
					r.Batch.Release()
				}
				if r.Removed {
					s.removed.Store(true)
				}
			}
			p, err := udpio.NewPoller(m.cfg, h)
			if err != nil {
				t.Fatal(err)
			}
			peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()

			var mu sync.Mutex // serialises sends with closes
			live := map[int]*session{}
			nextID := 0
			open := func() {
				c, err := udpio.Dial(context.Background(), netip.AddrPort{}, peerAddr, udpio.Options{ReadBuffer: 1 << 16})
				if err != nil {
					t.Error(err)
					return
				}
				nextID++
				s := &session{id: nextID, conn: c}
				if s.tok, err = p.Add(c, s); err != nil {
					t.Error(err)
					c.Close()
					return
				}
				mu.Lock()
				live[s.id] = s
				mu.Unlock()
			}
			for range 64 {
				open()
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // traffic
				defer wg.Done()
				buf := make([]byte, 32)
				for {
					select {
					case <-stop:
						return
					default:
					}
					mu.Lock()
					for _, s := range live {
						buf[0], buf[1], buf[2], buf[3] = byte(s.id>>24), byte(s.id>>16), byte(s.id>>8), byte(s.id)
						peer.WriteToUDP(buf, net.UDPAddrFromAddrPort(s.conn.LocalAddr()))
					}
					mu.Unlock()
				}
			}()
			rng := rand.New(rand.NewPCG(1, 2))
			var lingering []*session // closed, Remove still to come
			for op := 0; op < 300; op++ {
				mu.Lock()
				var s *session
				for _, v := range live {
					s = v
					break
				}
				delete(live, s.id)
				switch rng.IntN(3) {
				case 0: // Remove, then Close
					p.Remove(s.tok)
					p.Settle(s.tok)
					s.removed.Store(true)
					s.conn.Close()
				case 1: // Close, then Remove
					s.conn.Close()
					p.Remove(s.tok)
					p.Settle(s.tok)
					s.removed.Store(true)
				case 2: // Close only, for now
					s.conn.Close()
					lingering = append(lingering, s)
				}
				mu.Unlock()
				open()
				if len(lingering) > 8 {
					for _, l := range lingering {
						p.Remove(l.tok)
						p.Settle(l.tok)
						l.removed.Store(true)
					}
					lingering = lingering[:0]
				}
			}
			select {
			case <-first:
			case <-time.After(testTimeout):
				t.Fatal("nothing was delivered")
			}
			close(stop)
			wg.Wait()
			p.Close()
			closedP.Store(true)
			mu.Lock()
			for _, s := range live {
				s.conn.Close()
			}
			mu.Unlock()
			if v := violations.Load(); v > 0 {
				t.Fatalf("%d deliveries to the wrong owner, or after Remove or Close returned", v)
			}
			if p.Remove(1) || p.Len() < 0 {
				t.Fatal("Remove after Close reported true")
			}
			if _, err := p.Add(dialPeer(t, peerAddr), nil); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Add after Close: %v, want net.ErrClosed", err)
			}
		})
	}
}

// TestPollerHandlerAddsAndRemoves: the handler may call Remove and Add, as
// an owner running inline in it does when it ends (a session that fails
// while it handles its replies) or opens another. The loop goes on, the
// removed socket is not read again, and the added one is served.
func TestPollerHandlerAddsAndRemoves(t *testing.T) {
	for _, m := range pollModes {
		t.Run(m.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			peer := udpPeer(t, "127.0.0.1:0")
			peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()
			first, second := dialPeer(t, peerAddr), dialPeer(t, peerAddr)
			ch := make(chan delivery, 16)
			rec := recorder(ch)
			var (
				p        *udpio.Poller[int]
				tok1     udpio.PollToken
				removed  bool
				addedErr error
				set      = make(chan struct{}) // closed once p and tok1 are set
			)
			h := func(r *udpio.Ready[int]) {
				<-set
				if r.Owner == 1 {
					removed = p.Remove(tok1)
					_, addedErr = p.Add(second, 2)
				}
				rec(r)
			}
			p, err := udpio.NewPoller(m.cfg, h)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if tok1, err = p.Add(first, 1); err != nil {
				t.Fatal(err)
			}
			close(set)
			sendTo(t, peer, first, []byte("one"))
			if d := next(t, ch); d.owner != 1 || string(d.payloads[0]) != "one" {
				t.Fatalf("first delivery: owner %d %q, want 1 \"one\"", d.owner, d.payloads)
			}
			if !removed || addedErr != nil {
				t.Fatalf("in the handler: Remove reported %v, Add failed with %v", removed, addedErr)
			}
			sendTo(t, peer, first, []byte("two"))
			sendTo(t, peer, second, []byte("three"), []byte("four"))
			var got []string
			for len(got) < 2 {
				d := next(t, ch)
				if d.owner != 2 {
					t.Fatalf("delivery to owner %d after it was removed", d.owner)
				}
				for _, pl := range d.payloads {
					got = append(got, string(pl))
				}
			}
			if n, err := udpio.QueuedBytes(first); err != nil || n != len("two") {
				t.Fatalf("the removed socket's queue holds %d bytes (%v), want its unread datagram", n, err)
			}
			if p.Len() != 1 {
				t.Fatalf("%d sockets registered, want 1", p.Len())
			}
		})
	}
}

func TestPollerConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  udpio.PollerConfig
		ok   bool
	}{
		{"zero", udpio.PollerConfig{}, true},
		{"blocking locked", udpio.PollerConfig{Mode: udpio.PollBlocking, LockThread: true}, true},
		{"locked netpoller", udpio.PollerConfig{LockThread: true}, false},
		{"unknown mode", udpio.PollerConfig{Mode: 9}, false},
		{"negative events", udpio.PollerConfig{Events: -1}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	if _, err := udpio.NewPoller[int](udpio.PollerConfig{}, nil); err == nil {
		t.Fatal("NewPoller accepted a nil handler")
	}
}

func TestPollerAllocs(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("sync.Pool drops items under -race; the README's test command runs this guard without -race")
	}
	for _, m := range pollModes {
		t.Run(m.name, func(t *testing.T) {
			got := make(chan int, 64)
			p := newPoller(t, m.cfg, func(r *udpio.Ready[int]) {
				if r.Batch != nil {
					got <- len(r.Batch.Datagrams)
					r.Batch.Release()
				}
			})
			srv := listen(t, "127.0.0.1:0")
			c := dialPeer(t, srv.LocalAddr())
			if _, err := p.Add(c, 1); err != nil {
				t.Fatal(err)
			}
			out := udpio.GetBatch()
			for i := 0; i < 8; i++ {
				out.Add(udpio.Datagram{Buf: udpio.GetBuffer(), N: 64, Addr: c.LocalAddr()})
			}
			deadline := time.NewTimer(4 * testTimeout) // one timer: time.After would allocate per run
			defer deadline.Stop()
			allocs := testing.AllocsPerRun(200, func() {
				if sent, _, err := srv.WriteBatch(out, out.Datagrams); sent != 8 {
					t.Fatal(err)
				}
				for n := 0; n < 8; {
					select {
					case k := <-got:
						n += k
					case <-deadline.C:
						t.Fatal("the poller delivered too little")
					}
				}
			})
			if allocs != 0 {
				t.Fatalf("8 datagrams through the poller allocate %v times, want 0", allocs)
			}
		})
	}
}
