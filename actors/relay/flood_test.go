package relay_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// Tests of the admission path under hostile input (issue 11): a flood of
// initiations from one source, and one initiation replayed under many
// client IDs. Loopback only; every wait is bounded.

// floodFor is how long a flood lasts.
const floodFor = 3 * time.Second

// testSlack is memory the test itself holds in the relay's heap while it
// measures: the flooder's batch, the clients' buffers, the fake
// upstream's record of what it received.
const testSlack = 4 << 20

// sessionBytes bounds what one idle session holds, for the sessions a
// flood may open (about 13 KB measured; see BenchmarkIdleSessions).
const sessionBytes = 64 << 10

// liveHeap is the Go heap in use after a collection: what is live, and
// what sync.Pools hold.
func liveHeap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// flooder sends copies of one 148-byte template from one socket as fast as
// it can, each with a random client ID (and, if fresh is set, random
// content after the sender index: a new initiation each time), until stop.
type flooder struct {
	conn *udpio.Conn
	sent atomic.Int64
}

func newFlooder(t *testing.T) *flooder {
	c, err := udpio.Listen(netip.MustParseAddrPort("127.0.0.1:0"), udpio.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &flooder{conn: c}
}

func (f *flooder) run(to netip.AddrPort, tmpl []byte, fresh bool, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(11, 4))
	for {
		select {
		case <-stop:
			return
		default:
		}
		b := udpio.GetBatch()
		for range udpio.MaxBatch {
			buf := udpio.GetBuffer()
			copy(buf[:], tmpl)
			id := rng.Uint32()&0xffffff | 1
			buf[1], buf[2], buf[3] = byte(id), byte(id>>8), byte(id>>16)
			if fresh {
				binary.LittleEndian.PutUint64(buf[8:], rng.Uint64())
			}
			b.Add(udpio.Datagram{Buf: buf, N: len(tmpl), Addr: to})
		}
		w := f.conn.WriteAll(b)
		f.sent.Add(int64(len(b.Datagrams) - w.Dropped))
		b.Release()
		// The flooder's socket also gets the echoes of the one session a
		// flood opens; nobody reads them, and its buffer drops them.
	}
}

// pinger is a legitimate client that sends one datagram at a time through
// its session (the upstream echoes) and waits for it to come back.
type pinger struct {
	c  *client
	id wgproto.ClientID
	// sent and answered count pings; late counts echoes that came after
	// their ping had given up on them.
	sent, answered, late int
}

// ping sends transport n and waits, up to wait, for its echo; older echoes
// that come late are counted and skipped.
func (p *pinger) ping(n uint64, wait time.Duration) bool {
	msg := wgtest.Transport(p.id, 7, n, 64)
	p.sent++
	if _, err := p.c.conn.WriteToUDPAddrPort(msg, p.c.to); err != nil {
		return false
	}
	deadline := time.Now().Add(wait)
	for {
		b, ok := p.c.recv(time.Until(deadline))
		if !ok {
			return false
		}
		if bytes.Equal(b, msg) {
			p.answered++
			return true
		}
		p.late++
	}
}

// sessionOf returns the live session of id.
func sessionOf(t *testing.T, r *relay.Relay, id wgproto.ClientID) messages.SessionStatus {
	t.Helper()
	l, err := r.Sessions(waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range l.Sessions {
		if s.Client == id {
			return s
		}
	}
	t.Fatalf("no session of %v", id)
	return messages.SessionStatus{}
}

// One source floods the relay as fast as the test can send, for floodFor,
// while a legitimate client ping-pongs through its own session:
//
//   - "one initiation": ONE initiation with a valid mac1 (the relay checks
//     it: --upstream-public-key), under a random client ID each time. It
//     opens one session; every other copy is a replay.
//   - "fresh initiations": a new initiation each time (no mac1 key): the
//     source's admission budget bounds the sessions it opens.
//
// Either way the relay's heap stays under relay.MemoryBound (plus the
// sessions the flood opened, and the test's own buffers), nothing it read
// is dropped for a full queue, and every datagram of the legitimate client
// that the relay read was answered: its session's four counters agree. The
// kernel may drop datagrams before the relay reads them (the flood shares
// the listening socket's buffer and two cores with the relay); those are
// the legitimate client's only losses, and the test logs them.
func TestFlood(t *testing.T) {
	pub, err := wgproto.ParsePublicKey(wgproto.WARPPublicKey)
	if err != nil {
		t.Fatal(err)
	}
	key := wgproto.NewMAC1Key(pub)
	for _, tc := range []struct {
		name  string
		sec   config.Security
		fresh bool
	}{
		{"one initiation", config.Security{UpstreamPublicKey: config.PublicKey(pub)}, false},
		{"fresh initiations", config.Security{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t, "127.0.0.1:0", true)
			r := startSecured(t, up.addr(), tc.sec, "127.0.0.1:0")
			to := r.ListenAddrs()[0]
			k := r.Counters()

			legitID := wgproto.ClientID{0x1e, 0x91, 0x07}
			p := &pinger{c: newClient(t, "127.0.0.1:0", to), id: legitID}
			init := signedInitiation(legitID, 1, key)
			p.c.send(t, init)
			if got := p.c.mustRecv(t); !bytes.Equal(got, init) {
				t.Fatal("the legitimate client's handshake did not come back")
			}
			if !p.ping(0, waitTimeout) {
				t.Fatal("the legitimate client gets no replies")
			}

			tmpl := signedInitiation(wgproto.ClientID{1, 1, 1}, 99, key)
			f := newFlooder(t)
			base := liveHeap()
			var peak atomic.Int64
			stop, sampled := make(chan struct{}), make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() { f.run(to, tmpl, tc.fresh, stop) })
			go func() {
				defer close(sampled)
				tick := time.NewTicker(200 * time.Millisecond)
				defer tick.Stop()
				for {
					if h := liveHeap(); h > peak.Load() {
						peak.Store(h)
					}
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			}()
			start := time.Now()
			for n := uint64(1); time.Since(start) < floodFor; n++ {
				p.ping(n, time.Second)
			}
			close(stop)
			wg.Wait()
			<-sampled
			elapsed := time.Since(start)
			if h := liveHeap(); h > peak.Load() {
				peak.Store(h)
			}

			// The flood's last datagrams are read and decided by now: a
			// ping sent after them comes back after them.
			for n := uint64(1 << 32); !p.ping(n, time.Second); n++ {
				if n > 1<<32+10 {
					t.Fatal("the legitimate client gets no replies after the flood")
				}
			}
			opened := int(k.Events(stats.SessionOpened))
			grew := peak.Load() - base
			bound := int64(relay.MemoryBound(1, r.Workers()) + opened*sessionBytes + testSlack)
			t.Logf("flood: %d sent in %v, %d read by the relay; %d sessions opened; drops: %d replayed, %d over budget, %d pending, %d queue full",
				f.sent.Load(), elapsed.Round(time.Millisecond), k.Datagrams(stats.FromClient), opened,
				k.Dropped(stats.ReplayedInitiation), k.Dropped(stats.AdmissionOverload), k.Dropped(stats.AdmissionPending), k.Dropped(stats.QueueFull))
			t.Logf("heap in use %.1f MB before, %.1f MB at most during the flood: grew %.1f MB, bound %.1f MB",
				float64(base)/1e6, float64(peak.Load())/1e6, float64(grew)/1e6, float64(bound)/1e6)
			t.Logf("the legitimate client: %d sent, %d answered (%d of them late), %d not", p.sent, p.answered+p.late, p.late, p.sent-p.answered-p.late)

			if grew > bound {
				t.Errorf("the heap grew %d bytes during the flood, over the bound of %d", grew, bound)
			}
			if n := k.Dropped(stats.QueueFull); n != 0 {
				t.Errorf("%d datagrams the relay read were dropped for a full queue", n)
			}
			allowed := map[stats.Reason]bool{stats.ReplayedInitiation: true, stats.AdmissionOverload: true, stats.AdmissionPending: true}
			for _, reason := range stats.Reasons() {
				if n := k.Dropped(reason); n != 0 && !allowed[reason] {
					t.Errorf("%d datagrams dropped as %s", n, reason)
				}
			}
			if tc.fresh {
				// The source's budget: a burst, then its rate, over the
				// time the test measured (the legitimate client's own
				// session came first, out of the same budget).
				most := 1 + limits.SourceAdmissionBurst + int(math.Ceil(limits.SourceAdmissionRate*time.Since(start).Seconds()))
				if opened > most || k.Dropped(stats.AdmissionOverload) == 0 {
					t.Errorf("%d sessions opened, %d refused over budget: want at most %d opened, the rest refused", opened, k.Dropped(stats.AdmissionOverload), most)
				}
			} else if opened != 2 || k.Dropped(stats.ReplayedInitiation) == 0 {
				t.Errorf("%d sessions opened, %d replays refused: want 2 (the legitimate one, and one for the flood's initiation), the rest refused", opened, k.Dropped(stats.ReplayedInitiation))
			}

			// Everything of the legitimate client's the relay read went
			// upstream and came back to it.
			st := sessionOf(t, r, legitID).Stats.Datagrams
			if st[stats.FromClient] != st[stats.ToUpstream] || st[stats.ToUpstream] != st[stats.FromUpstream] || st[stats.FromUpstream] != st[stats.ToClient] {
				t.Errorf("the legitimate session read %d from the client, sent %d upstream, read %d back, sent %d to the client: it lost some",
					st[stats.FromClient], st[stats.ToUpstream], st[stats.FromUpstream], st[stats.ToClient])
			}
			// Its datagrams the relay never read are its only losses: it got
			// back every one the relay read (the last ping, after the
			// flood, came back after all the others).
			if read := int(st[stats.FromClient]) - 1; p.answered+p.late != read { // -1: the handshake
				t.Errorf("the legitimate client sent %d and got %d back; the relay read %d of them", p.sent, p.answered+p.late, read)
			}
		})
	}
}

// One handshake initiation replayed under 200 client IDs opens one session
// (the first decided: with several workers, whichever worker's ID won),
// with or without the upstream's mac1 key: the other 199 are counted as
// replayed_initiation and reach nothing. The winning ID's own retransmission
// of it still goes through its session, and a new initiation under a new
// ID still opens one. The replays spend none of the source's budget (200
// is more than its burst).
func TestReplayedInitiationOpensOneSession(t *testing.T) {
	pub, err := wgproto.ParsePublicKey(wgproto.WARPPublicKey)
	if err != nil {
		t.Fatal(err)
	}
	key := wgproto.NewMAC1Key(pub)
	for _, withKey := range []bool{false, true} {
		name := "without the key"
		sec := config.Security{}
		if withKey {
			name, sec = "with the key", config.Security{UpstreamPublicKey: config.PublicKey(pub)}
		}
		t.Run(name, func(t *testing.T) {
			const ids = 200
			up := newUpstream(t, "127.0.0.1:0", false)
			r := startSecured(t, up.addr(), sec, "127.0.0.1:0")
			k := r.Counters()
			c := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
			init := signedInitiation(wgproto.ClientID{0x70, 0, 0}, 5, key)
			id := func(i int) wgproto.ClientID { return wgproto.ClientID{0x70, byte(i >> 8), byte(i + 1)} }
			for i := range ids {
				b := bytes.Clone(init)
				x := id(i)
				copy(b[1:4], x[:])
				c.send(t, b)
			}
			eventually(t, "every copy to be decided", func() bool {
				return k.Events(stats.SessionOpened)+k.Dropped(stats.ReplayedInitiation) >= ids
			})
			// The first ID to be decided wins: the one sent first with one
			// worker, any of them with several (each worker decides its own
			// IDs, and they share the replay table).
			got := up.next(t)
			first := wgproto.ClientID(got.data[1:4])
			if !bytes.Equal(got.data[4:], init[4:]) || first[0] != 0x70 || first == (wgproto.ClientID{0x70, 0, 0}) {
				t.Fatalf("the upstream got %x..., want the initiation under one of the IDs sent", got.data[:8])
			}
			if r.Workers() == 1 && first != id(0) {
				t.Fatalf("the upstream got the initiation under %v, want the first ID %v", first, id(0))
			}
			if n, replays := k.Events(stats.SessionOpened), k.Dropped(stats.ReplayedInitiation); n != 1 || replays != ids-1 {
				t.Fatalf("%d sessions opened, %d replays refused; want 1 and %d", n, replays, ids-1)
			}
			if n := k.TotalDropped(); n != ids-1 {
				t.Errorf("%d dropped in all, want only the %d replays", n, ids-1)
			}

			// The first ID sends it again: a retransmission, forwarded.
			b := bytes.Clone(init)
			copy(b[1:4], first[:])
			c.send(t, b)
			if got := up.next(t); !bytes.Equal(got.data, b) {
				t.Fatal("the retransmission under the first ID did not reach the upstream")
			}
			// A new initiation under a new ID opens a session.
			fresh := signedInitiation(wgproto.ClientID{0x71, 0, 1}, 6, key)
			c.send(t, fresh)
			if got := up.next(t); !bytes.Equal(got.data, fresh) {
				t.Fatal("a new initiation under a new ID did not reach the upstream")
			}
			if n := k.Events(stats.SessionOpened); n != 2 {
				t.Fatalf("%d sessions opened, want 2", n)
			}
			select {
			case got := <-up.in:
				t.Fatalf("the upstream got another datagram: %x...", got.data[:8])
			default:
			}
		})
	}
}
