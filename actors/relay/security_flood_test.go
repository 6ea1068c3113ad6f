package relay_test

// A junk flood (issue 6): thousands of forged handshakes with random client
// IDs cost the relay no session, no upstream datagram, and no memory that
// grows with them; legitimate clients go on. Loopback only.

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/supervisor"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// signedInitiation is a handshake initiation whose mac1 is valid for the
// responder with mac1 key key, as a relay with --upstream-public-key wants.
func signedInitiation(id wgproto.ClientID, sender uint32, key wgproto.MAC1Key) []byte {
	b := wgtest.Initiation(id, sender)
	wgproto.PutMAC1(b, key)
	return b
}

// openFiles counts the process's open file descriptors.
func openFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(fds)
}

// heapInUse is the Go heap in use after a collection. Two collections:
// what sync.Pools hold survives the first.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// junkInitiation is a handshake initiation with a random non-zero client ID
// and random content, so its mac1 is wrong for any key.
func junkInitiation(rng *rand.Rand) []byte {
	b := make([]byte, wgproto.InitiationSize)
	fillRandom(rng, b)
	b[0] = byte(wgproto.TypeInitiation)
	if b[1]|b[2]|b[3] == 0 {
		b[1] = 1
	}
	return b
}

// 20 000 junk initiations with random client IDs and bad mac1s open no
// session and reach nothing upstream; a legitimate client keeps working
// during and after the flood, a new one can still open a session, and the
// process's open files and heap stay flat.
func TestSecurityFlood(t *testing.T) {
	const (
		junk = 20000
		// The flood goes out in bursts, at most two ahead of what the
		// relay has read, so the listening socket's buffer holds it all.
		burst = 1000
	)
	pub, err := wgproto.ParsePublicKey(wgproto.WARPPublicKey)
	if err != nil {
		t.Fatal(err)
	}
	key := wgproto.NewMAC1Key(pub)
	up := newUpstream(t, "127.0.0.1:0", true)
	r := startSecured(t, up.addr(), config.Security{UpstreamPublicKey: config.PublicKey(pub)}, "127.0.0.1:0")
	ev := watchEvents(t, r)
	to := r.ListenAddrs()[0]
	k := r.Counters()

	legitID := wgproto.ClientID{0x1e, 0x91, 0x07}
	legit := newClient(t, "127.0.0.1:0", to)
	init := signedInitiation(legitID, 1, key)
	legit.send(t, init)
	if got := legit.mustRecv(t); !bytes.Equal(got, init) {
		t.Fatal("the legitimate client's handshake did not come back")
	}
	if !ping(legit, legitID, 0) {
		t.Fatal("the legitimate client gets no replies")
	}
	senders := make([]*client, 4)
	for i := range senders {
		senders[i] = newClient(t, "127.0.0.1:0", to)
	}
	fds, heap := openFiles(t), heapInUse()

	// The legitimate client pings through the flood.
	stop := make(chan struct{})
	var answered, unanswered atomic.Int64
	pinging := make(chan struct{})
	go func() {
		defer close(pinging)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for n := uint64(1); ; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if ping(legit, legitID, n) {
				answered.Add(1)
			} else {
				unanswered.Add(1)
			}
		}
	}()
	pings := func() int64 { return answered.Load() + unanswered.Load() }
	before := pings()

	rng := rand.New(rand.NewPCG(20000, 6))
	base := k.Datagrams(stats.FromClient)
	start := time.Now()
	for sent := 0; sent < junk; {
		for range burst {
			if _, err := senders[sent%len(senders)].conn.WriteToUDPAddrPort(junkInitiation(rng), to); err != nil {
				t.Fatal(err)
			}
			sent++
		}
		eventually(t, "the relay to read the flood", func() bool {
			return k.Datagrams(stats.FromClient)-base+2*burst >= uint64(sent)
		})
		if sent == junk/2 {
			// Halfway, a ping that began after the flood did (the second
			// one since) has come back, however the goroutines were
			// scheduled: the client was tested during the flood.
			eventually(t, "a ping during the flood", func() bool { return pings() >= before+2 })
		}
	}
	eventually(t, "every junk initiation to be dropped", func() bool { return k.Dropped(stats.BadMAC1) >= junk }, func() string {
		return fmt.Sprintf("%d of %d dropped for a bad mac1; %d sessions opened", k.Dropped(stats.BadMAC1), junk, count[*messages.SessionOpened](ev))
	})
	took := time.Since(start)
	close(stop)
	<-pinging
	t.Logf("%d junk initiations dropped in %v; the legitimate client's pings during the flood: %d answered, %d not",
		k.Dropped(stats.BadMAC1), took.Round(time.Millisecond), answered.Load(), unanswered.Load())
	if n := unanswered.Load(); n != 0 {
		t.Errorf("during the flood %d pings were not answered (%d were)", n, answered.Load())
	}
	for n := range uint64(20) {
		if !ping(legit, legitID, 1<<32+n) {
			t.Fatalf("ping %d after the flood got no reply", n)
		}
	}
	// A new client can still open a session.
	newID := wgproto.ClientID{0x2f, 0x10, 0x0d}
	late := newClient(t, "127.0.0.1:0", to)
	init = signedInitiation(newID, 2, key)
	late.send(t, init)
	if got := late.mustRecv(t); !bytes.Equal(got, init) {
		t.Fatal("a new client after the flood got no reply")
	}

	if got := k.Dropped(stats.BadMAC1); got != junk {
		t.Errorf("%d dropped for a bad mac1, want %d", got, junk)
	}
	if got, bad := k.TotalDropped(), k.Dropped(stats.BadMAC1); got != bad {
		t.Errorf("%d datagrams dropped, %d of them for a bad mac1: want no other drops", got, bad)
	}
	if n, live, counted := count[*messages.SessionOpened](ev), k.Live(), k.Events(stats.SessionOpened); n != 2 || live != 2 || counted != 2 {
		t.Errorf("%d SessionOpened events, %d live sessions, %d counted: want the two legitimate ones", n, live, counted)
	}
	seen := up.drain()
	if len(seen) == cap(up.in) {
		t.Fatal("the upstream's record overflowed: the check below would be incomplete")
	}
	for _, d := range seen {
		if id := wgproto.ClientID(d.data[1:4]); id != legitID && id != newID {
			t.Fatalf("the upstream got a datagram of type %d for client %v", d.data[0], id)
		}
	}
	// Nothing grew with the number of client IDs tried. The supervisor
	// keeps up to SpareSockets upstream sockets dialled ahead, a fixed
	// number whatever arrives, filled after the sessions opened.
	fdsAfter, heapAfter := openFiles(t), heapInUse()
	t.Logf("open files %d -> %d, heap in use %.1f -> %.1f MB", fds, fdsAfter, float64(heap)/1e6, float64(heapAfter)/1e6)
	if fdsAfter > fds+5+supervisor.SpareSockets || fdsAfter < fds-5-supervisor.SpareSockets {
		t.Errorf("open files went from %d to %d", fds, fdsAfter)
	}
	if heapAfter > heap+20<<20 {
		t.Errorf("heap in use went from %d to %d bytes", heap, heapAfter)
	}
}
