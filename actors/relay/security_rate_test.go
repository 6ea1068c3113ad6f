package relay_test

// The rate limits (issue 6): new sessions per source address, and
// datagrams and bytes per client. Loopback only.
//
// What passes a token bucket depends on when the relay handled each
// datagram, which a loaded machine delays. So these tests assert what the
// bucket guarantees over times the test measured itself: a slower run lets
// more time pass, and the bounds widen with it; they never come from the
// schedule the test meant to keep. The buckets' arithmetic with an injected
// clock is tested in internal/limits.

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// --new-sessions-per-ip: of a burst of new client IDs from one source, the
// bucket's burst opens and the rest is refused (unless time has refilled
// it meanwhile); another source is not held back; and a refused client is
// let in once time has refilled the source's bucket, not before.
func TestSecurityNewSessionsPerIP(t *testing.T) {
	const (
		perSecond = 1.0
		burst     = 3
		attempts  = 8 // all of them would open only if deciding them took 5 s
	)
	up := newUpstream(t, "127.0.0.1:0", true)
	r := startSecured(t, up.addr(), config.Security{NewSessionsPerIP: perSecond, NewSessionsPerIPBurst: burst}, "127.0.0.1:0")
	ev := watchEvents(t, r)
	k := r.Counters()
	to := r.ListenAddrs()[0]
	isOpen := func(id wgproto.ClientID) bool { _, in := ev.opened()[id]; return in }

	// One attempt after another, each decided before the next, so that the
	// bucket sees them in the order sent.
	one := newClient(t, "127.0.0.1:0", to)
	start := time.Now() // the source's bucket is made, full, after this
	for i := range attempts {
		refusals := k.Dropped(stats.NewSessionRate)
		one.send(t, wgtest.Initiation(burstID(i), uint32(i)))
		eventually(t, fmt.Sprintf("attempt %d to be decided", i), func() bool {
			return isOpen(burstID(i)) || k.Dropped(stats.NewSessionRate) > refusals
		})
	}
	elapsed := time.Since(start)
	admitted := count[*messages.SessionOpened](ev)
	most := min(attempts, burst+int(perSecond*elapsed.Seconds()))
	if admitted < burst || admitted > most {
		t.Fatalf("%d of %d attempts opened a session in %v; the bucket allows %d..%d", admitted, attempts, elapsed, burst, most)
	}
	if admitted == attempts {
		t.Fatalf("all %d attempts opened a session: deciding them took %v, long enough to refill the bucket, so nothing was tested", attempts, elapsed)
	}
	if got := k.Dropped(stats.NewSessionRate); got != uint64(attempts-admitted) {
		t.Errorf("%d dropped for new_session_rate, want %d", got, attempts-admitted)
	}

	// Another source has a bucket of its own.
	two := newClient(t, "127.0.0.2:0", to)
	two.send(t, wgtest.Initiation(wgproto.ClientID{0x60, 0x00, 0x02}, 1))
	two.mustRecv(t)

	// The first source's refused client retries, as WireGuard does, until
	// it is let in.
	var refused wgproto.ClientID
	for i := range attempts {
		if !isOpen(burstID(i)) {
			refused = burstID(i)
			break
		}
	}
	tries := 0
	for deadline := time.Now().Add(waitTimeout); !isOpen(refused); {
		if time.Now().After(deadline) {
			t.Fatalf("the refused client was not let in after %d tries", tries)
		}
		refusals := k.Dropped(stats.NewSessionRate)
		one.send(t, wgtest.Initiation(refused, uint32(100+tries)))
		tries++
		eventually(t, "the retry to be decided", func() bool {
			return isOpen(refused) || k.Dropped(stats.NewSessionRate) > refusals
		})
		if !isOpen(refused) {
			time.Sleep(20 * time.Millisecond) // the retry interval, not a wait for an event
		}
	}
	// The bucket was made full after start and held burst tokens; each
	// session past them needed 1/perSecond more: not one comes earlier.
	took := time.Since(start)
	need := time.Duration(float64(admitted-burst+1) / perSecond * float64(time.Second))
	if took < need {
		t.Errorf("the refused client was let in %v after the burst began; the rate allows it after %v", took, need)
	}
	t.Logf("%d of %d attempts opened in %v; the refused client was let in after %d tries, %v after the burst began",
		admitted, attempts, elapsed.Round(time.Millisecond), tries, took.Round(time.Millisecond))
	if got := count[*messages.SessionOpened](ev); got != admitted+2 {
		t.Errorf("%d sessions, want %d", got, admitted+2)
	}
}

// rateCase is a per-client rate limit and what it lets through of
// datagrams of size bytes: burst at once, then perSecond.
type rateCase struct {
	name      string
	lim       limits.Limits
	size      int
	burst     int
	perSecond float64
}

// refill is how long the rate-limit test lets a drained bucket refill
// before it sends again: less than any tested bucket takes to fill, so what
// passes then shows the rate, not the burst.
const refill = 150 * time.Millisecond

// A client held to a rate limit gets its burst through, then what the rate
// refills, in each direction; the rest is dropped and counted; and its
// handshakes pass while it is over the limit.
func TestSecurityClientRate(t *testing.T) {
	for _, tc := range []rateCase{
		{"datagrams", limits.Limits{DatagramsPerSecond: 200, DatagramBurst: 50}, 64, 50, 200},
		{"bytes", limits.Limits{BytesPerSecond: 200 << 10, ByteBurst: 64 << 10}, 1024, 64, 200},
	} {
		t.Run(tc.name, func(t *testing.T) { testClientRate(t, tc) })
	}
}

// rateWay is one direction through a rate-limited session.
type rateWay struct {
	name      string
	send      func(b []byte)
	msg       []byte        // what the limit applies to
	handshake []byte        // what it lets pass when over the limit
	passed    func() uint64 // datagrams passed this way so far, handshakes included
}

func testClientRate(t *testing.T, tc rateCase) {
	id := wgproto.ClientID{0x70, 0x70, byte(tc.size >> 4)}
	up := newUpstream(t, "127.0.0.1:0", false)
	// The limit with its bursts, as Security.ClientRate would add it (last
	// in the chain); the config sets no bursts (one second's worth).
	r := startConfig(t, relayConfig(t, up.addr(), nil, "127.0.0.1:0"), relay.WithPolicy(policy.ClientRate(tc.lim, nil)))
	k := r.Counters()
	c := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	c.send(t, wgtest.Initiation(id, 1))
	port := up.next(t).from
	up.sendTo(t, port, wgtest.Response(id, 77, 1))
	c.mustRecv(t)

	// Up: the client sends transport messages; over its limit, it sends a
	// handshake initiation, which must reach the upstream.
	const rekey = 4242
	checkRateWay(t, tc, k, rateWay{
		name:      "client to upstream",
		send:      func(b []byte) { c.conn.WriteToUDPAddrPort(b, c.to) },
		msg:       wgtest.Transport(id, 77, 1, tc.size),
		handshake: wgtest.Initiation(id, rekey),
		passed:    func() uint64 { return k.Datagrams(stats.ToUpstream) },
	})
	eventually(t, "the initiation sent over the limit to reach the upstream", func() bool {
		for _, d := range up.drain() {
			if h, v := wgproto.Parse(d.data); v == wgproto.OK && h.Type == wgproto.TypeInitiation && h.Index == rekey {
				return true
			}
		}
		return false
	})

	// Down: the upstream sends transport messages to the client; over the
	// limit it answers the handshake, and the response must reach the
	// client. The client reads all the while, so its socket never fills.
	responded := make(chan bool, 1)
	go func() {
		for {
			b, ok := c.recv(waitTimeout)
			if !ok {
				responded <- false
				return
			}
			if h, v := wgproto.Parse(b); v == wgproto.OK && h.Type == wgproto.TypeResponse && h.Receiver == rekey {
				responded <- true
				return
			}
		}
	}()
	checkRateWay(t, tc, k, rateWay{
		name:      "upstream to client",
		send:      func(b []byte) { up.conn.WriteToUDPAddrPort(b, port) },
		msg:       wgtest.Transport(id, 1, 1, tc.size),
		handshake: wgtest.Response(id, 78, rekey),
		passed:    func() uint64 { return k.Datagrams(stats.ToClient) },
	})
	if !<-responded {
		t.Error("the handshake response sent over the limit did not reach the client")
	}
	if got, limited := k.TotalDropped(), k.Dropped(stats.ClientRate); got != limited {
		t.Errorf("%d dropped, %d of them for client_rate: want no other drops", got, limited)
	}
}

// checkRateWay drains the session's bucket in one direction, lets it refill
// for refill, then sends three bursts' worth at once with a handshake in
// the middle, and checks what passed against what the bucket allows over
// the times measured.
func checkRateWay(t *testing.T, tc rateCase, k *stats.Counters, w rateWay) {
	t.Helper()
	sent := 0
	base := w.passed() + k.Dropped(stats.ClientRate)
	decided := func() uint64 { return w.passed() + k.Dropped(stats.ClientRate) - base }
	send := func(n int) {
		for range n {
			w.send(w.msg)
			sent++
		}
	}

	// Drain: send twice the burst, and again until the limit drops one
	// (the session may get its limit a moment after it opened). When a
	// chunk is decided with a drop, the bucket was empty at some moment
	// after the chunk was sent.
	var chunkSent time.Time
	burstPassed := uint64(0)
	for deadline := time.Now().Add(waitTimeout); ; {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the limit dropped nothing of %d datagrams", w.name, sent)
		}
		drops, passed := k.Dropped(stats.ClientRate), w.passed()
		chunkSent = time.Now()
		send(2 * tc.burst)
		eventually(t, w.name+": the relay to decide every datagram", func() bool { return decided() == uint64(sent) })
		burstPassed += w.passed() - passed
		if k.Dropped(stats.ClientRate) > drops {
			break
		}
	}
	drained := time.Now()
	if burstPassed < uint64(tc.burst) {
		t.Errorf("%s: %d datagrams passed before the limit dropped one, want at least the burst, %d", w.name, burstPassed, tc.burst)
	}

	// Refill, then send three bursts' worth at once, the handshake halfway.
	time.Sleep(refill) // the time the test gives the bucket, not a wait for an event
	before := w.passed()
	sending := time.Now()
	n := 3 * tc.burst
	send(n / 2)
	w.send(w.handshake)
	send(n - n/2)
	eventually(t, w.name+": the relay to decide every datagram", func() bool { return decided() == uint64(sent+1) })
	done := time.Now()
	passed := w.passed() - before - 1 // not the handshake

	// The bucket had at least the refill since drained (at most a burst)
	// when these arrived; and it has held less than one datagram's tokens
	// at a moment after chunkSent, so at most one more than what it
	// refilled since then can have passed.
	lo := uint64(math.Floor(min(float64(tc.burst), tc.perSecond*sending.Sub(drained).Seconds()) - 1e-6))
	hi := uint64(math.Floor(1 + tc.perSecond*done.Sub(chunkSent).Seconds()))
	t.Logf("%s: %d of %d datagrams passed after a refill of %v; the bucket allows %d..%d",
		w.name, passed, n, sending.Sub(drained).Round(time.Millisecond), lo, hi)
	if passed < lo || passed > hi {
		t.Errorf("%s: %d datagrams passed, want %d..%d", w.name, passed, lo, hi)
	}
	if passed >= uint64(n) {
		t.Errorf("%s: all %d datagrams passed: the limit does not hold", w.name, n)
	}
}
