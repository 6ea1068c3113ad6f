package relay_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/warptest"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// Tests of udpfwd on a hostile network (issue 6): hijack attempts against
// a real WireGuard client, a junk flood, the session caps, the allow and
// deny lists and the per-client rate limit. Loopback only.

// startSecured starts a WireGuard-mode relay with the security settings sec
// in front of up, listening on every address of listen.
func startSecured(t *testing.T, up netip.AddrPort, sec config.Security, listen ...string) *relay.Relay {
	t.Helper()
	return startConfig(t, relayConfig(t, up, func(c *config.Relay) { c.Security = sec }, listen...))
}

// listenerFor returns the relay's listening address of from's family.
func listenerFor(t *testing.T, r *relay.Relay, from string) netip.AddrPort {
	t.Helper()
	v6 := netip.MustParseAddrPort(from).Addr().Is6()
	for _, a := range r.ListenAddrs() {
		if a.Addr().Is6() == v6 {
			return a
		}
	}
	t.Fatalf("the relay listens on %v: none for %s", r.ListenAddrs(), from)
	return netip.AddrPort{}
}

// tally records a relay's SessionOpened events. Unlike watchEvents it never
// blocks the event stream, however many sessions a broken relay opens.
type tally struct {
	mu     sync.Mutex
	opened []*messages.SessionOpened
}

func countOpened(t *testing.T, r *relay.Relay) *tally {
	c := &tally{}
	sub := r.System().EventStream.Subscribe(func(evt any) {
		if o, ok := evt.(*messages.SessionOpened); ok {
			c.mu.Lock()
			c.opened = append(c.opened, o)
			c.mu.Unlock()
		}
	})
	t.Cleanup(func() { r.System().EventStream.Unsubscribe(sub) })
	return c
}

// ids returns the client IDs of the sessions opened, with the address that
// opened each.
func (c *tally) ids() map[wgproto.ClientID]netip.AddrPort {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[wgproto.ClientID]netip.AddrPort, len(c.opened))
	for _, o := range c.opened {
		m[o.Client] = o.ClientAddr
	}
	return m
}

func (c *tally) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.opened)
}

// within polls cond until it holds, for at most d, and reports whether it
// held; for waits whose failure the caller describes better than eventually.
func within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// signedInitiation is a handshake initiation whose mac1 is valid for the
// responder with mac1 key key, as a relay with --upstream-public-key wants.
func signedInitiation(id wgproto.ClientID, sender uint32, key wgproto.MAC1Key) []byte {
	b := wgtest.Initiation(id, sender)
	wgproto.PutMAC1(b, key)
	return b
}

// fillRandom fills b from rng.
func fillRandom(rng *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], rng.Uint64())
		copy(b[i:], w[:])
	}
}

// ping sends a transport message with counter n from c, through a session
// whose upstream echoes, and waits for that message to come back; it
// resends a few times before it reports failure. It is safe to call from
// any goroutine.
func ping(c *client, id wgproto.ClientID, n uint64) bool {
	msg := wgtest.Transport(id, 7, n, 64)
	for range 5 {
		if _, err := c.conn.WriteToUDPAddrPort(msg, c.to); err != nil {
			return false
		}
		deadline := time.Now().Add(500 * time.Millisecond)
		for {
			b, ok := c.recv(time.Until(deadline))
			if !ok {
				break
			}
			if bytes.Equal(b, msg) {
				return true
			}
		}
	}
	return false
}

// drain returns what the upstream has recorded so far, without waiting.
func (u *upstream) drain() []received {
	var all []received
	for {
		select {
		case r := <-u.in:
			all = append(all, r)
		default:
			return all
		}
	}
}

// Hijack: the attack lasts this long, and the attacker listens this much
// longer for anything the relay might still send it.
const (
	hijackAttack = 2 * time.Second
	hijackGrace  = 300 * time.Millisecond
)

// attackStats is what an attacker sent.
type attackStats struct {
	transports, initiations, validMAC1 int
	elapsed                            time.Duration
}

func (a attackStats) sent() int { return a.transports + a.initiations }

// forge sends to the relay at to, from conn, for d: forged transport
// messages with the victim's client ID, random receiver indexes, sizes
// 32..160 and random content, and forged handshake initiations with the
// victim's ID and random content. With key, it starts with a few
// initiations whose mac1 is valid for the upstream (anyone can compute
// that: the key is public), and every tenth initiation after them is
// valid too; they pass the relay's mac1 check and the upstream drops them,
// since they do not decrypt.
func forge(conn *net.UDPConn, to netip.AddrPort, id wgproto.ClientID, key *wgproto.MAC1Key, d time.Duration) attackStats {
	rng := rand.New(rand.NewPCG(0x6a11ac, uint64(id[0])<<16|uint64(id[1])<<8|uint64(id[2])))
	var st attackStats
	start := time.Now()
	initiation := func(valid bool) {
		b := make([]byte, wgproto.InitiationSize)
		fillRandom(rng, b)
		b[0] = byte(wgproto.TypeInitiation)
		copy(b[1:4], id[:])
		if valid {
			wgproto.PutMAC1(b, *key)
		}
		if _, err := conn.WriteToUDPAddrPort(b, to); err == nil {
			st.initiations++
			if valid {
				st.validMAC1++
			}
		}
	}
	if key != nil {
		for range 8 {
			initiation(true)
		}
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for now := range tick.C {
		if now.Sub(start) >= d {
			break
		}
		for range 4 {
			b := make([]byte, 32+rng.IntN(160-32+1))
			fillRandom(rng, b)
			b[0] = byte(wgproto.TypeTransport)
			copy(b[1:4], id[:])
			if _, err := conn.WriteToUDPAddrPort(b, to); err == nil {
				st.transports++
			}
		}
		initiation(key != nil && st.initiations%10 == 9)
	}
	st.elapsed = time.Since(start)
	return st
}

// roamedTo reports whether udpfwd published a ClientRoamed from from to to.
func roamedTo(b *bed, from, to netip.AddrPort) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.events {
		if r, ok := e.(*messages.ClientRoamed); ok && r.From == from && r.ClientAddr == to {
			return true
		}
	}
	return false
}

// An attacker who knows a victim's client ID sends forged transport
// messages and handshake initiations with it for seconds, during the
// victim's download: the attacker receives nothing, the victim's stream
// goes on intact, and the session does not move. Afterwards the victim's
// own roaming still moves the session, by a keepalive from a new port and
// by a new handshake from another.
func TestSecurityHijack(t *testing.T) {
	for _, tt := range []struct {
		name    string
		withKey bool
	}{
		{"default security", false},
		{"upstream public key", true},
	} {
		t.Run(tt.name, func(t *testing.T) { testHijack(t, tt.withKey) })
	}
}

func testHijack(t *testing.T, withKey bool) {
	var key *wgproto.MAC1Key
	b := newBedWith(t, 0, 0, func(e *warptest.Edge) config.Security {
		if !withKey {
			return config.Security{}
		}
		pub := wgproto.PublicKey(e.PublicKey())
		k := wgproto.NewMAC1Key(pub)
		key = &k
		return config.Security{UpstreamPublicKey: config.PublicKey(pub)}
	})
	id := warptest.ClientID{0x5a, 0x11, 0xce}
	c := b.client(t, id)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	handshake(t, ctx, c)
	victim := c.LocalAddr()

	attacker, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	attackerAddr := attacker.LocalAddr().(*net.UDPAddr).AddrPort()
	// The attacker listens for the whole attack and a while after it:
	// anything at all that reaches it fails the test.
	attacker.SetReadDeadline(time.Now().Add(hijackAttack + hijackGrace))
	leaked := make(chan int, 1)
	go func() {
		n, buf := 0, make([]byte, 2048)
		for {
			if _, _, err := attacker.ReadFromUDPAddrPort(buf); err != nil {
				leaked <- n
				return
			}
			n++
		}
	}()
	attacked := make(chan attackStats, 1)
	attackStart := time.Now()
	go func() { attacked <- forge(attacker, b.addr, wgproto.ClientID(id), key, hijackAttack) }()

	// Meanwhile the victim downloads verified streams, back to back, until
	// the attack is over.
	var st attackStats
	downloads, verified := 0, int64(0)
	for over := false; !over; {
		tr := c.Download(ctx, 2<<20, uint64(100+downloads))
		res, err := tr.Wait(ctx, e2eStall)
		if err != nil {
			t.Errorf("download %d during the attack: %v", downloads+1, err)
			st = <-attacked
			break
		}
		downloads++
		verified += res.Bytes
		select {
		case st = <-attacked:
			over = true
		default:
		}
	}
	if n := <-leaked; n != 0 {
		t.Errorf("the attacker received %d datagrams", n)
	}
	t.Logf("attack: %d forged transports and %d forged initiations (%d with a valid mac1) in %v; victim: %d downloads, %d bytes verified",
		st.transports, st.initiations, st.validMAC1, st.elapsed.Round(time.Millisecond), downloads, verified)
	if n := count[*messages.ClientRoamed](b); n != 0 {
		t.Errorf("udpfwd published %d ClientRoamed events during the attack", n)
	}
	if roamedTo(b, victim, attackerAddr) {
		t.Error("the session moved to the attacker")
	}
	if src := b.edge.Router().Sources(); len(src) != 1 {
		t.Errorf("the edge saw sources %v, want udpfwd's one port for the victim", src)
	}
	// The forged datagrams were read and dropped: the bad initiations for
	// their mac1, and all but a small budget of the rest because they come
	// from an address the session has not confirmed.
	k := b.relay.Counters()
	wantBadMAC1 := 0
	if withKey {
		wantBadMAC1 = st.initiations - st.validMAC1
	}
	// Forged transports from an unconfirmed address are dropped outright;
	// the budget for an unconfirmed source (limits.Unconfirmed: bursts of
	// 40, then 20/s) bounds the rest, however late the relay read.
	unconfirmed := limits.Unconfirmed()
	budget := func() uint64 {
		return uint64(float64(unconfirmed.DatagramBurst) + unconfirmed.DatagramsPerSecond*time.Since(attackStart).Seconds() + 1)
	}
	forwarded := func() uint64 {
		return uint64(st.sent()) - k.Dropped(stats.BadMAC1) - k.Dropped(stats.UnconfirmedRate) - k.Dropped(stats.UnconfirmedTransport)
	}
	wctx, wcancel := context.WithTimeout(ctx, waitTimeout)
	defer wcancel()
	if err := waitFor(wctx, "the forged datagrams to be dropped", func() bool {
		return k.Dropped(stats.BadMAC1) == uint64(wantBadMAC1) && forwarded() <= budget()
	}); err != nil {
		t.Fatalf("%v: %d dropped for bad mac1 (want %d), %d forwarded upstream (budget %d)",
			err, k.Dropped(stats.BadMAC1), wantBadMAC1, forwarded(), budget())
	}
	t.Logf("udpfwd dropped %d forged initiations for a bad mac1, %d forged transports from an unconfirmed address and %d forged datagrams over the unconfirmed budget",
		k.Dropped(stats.BadMAC1), k.Dropped(stats.UnconfirmedTransport), k.Dropped(stats.UnconfirmedRate))
	if t.Failed() {
		return
	}

	// Genuine roaming still works: a keepalive from a new port, in the
	// middle of a download, moves the session and the download goes on.
	tr := c.Download(ctx, 8<<20, 7)
	if err := tr.WaitBytes(ctx, 2<<20, e2eStall); err != nil {
		t.Fatal(err)
	}
	moved, err := c.Roam(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, "ClientRoamed to the new port", func() bool { return roamedTo(b, victim, moved) }); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Wait(ctx, e2eStall); err != nil {
		t.Fatalf("download across the roam: %v", err)
	}
	// So does a new handshake from a new port that sent nothing before it.
	again, err := c.Bind().Roam(nil)
	if err != nil {
		t.Fatal(err)
	}
	hctx, hcancel := context.WithTimeout(ctx, waitTimeout)
	defer hcancel()
	if err := c.Rehandshake(hctx); err != nil {
		t.Fatalf("handshake from the new port: %v", err)
	}
	if err := waitFor(ctx, "ClientRoamed after the handshake", func() bool { return roamedTo(b, moved, again) }); err != nil {
		t.Fatal(err)
	}
	if err := c.Echo(ctx, []byte("after a handshake from a new port")); err != nil {
		t.Fatal(err)
	}
	if n := count[*messages.ClientRoamed](b); n != 2 {
		t.Errorf("udpfwd published %d ClientRoamed events, want 2", n)
	}
	if src := b.edge.Router().Sources(); len(src) != 1 {
		t.Errorf("the edge saw sources %v, want udpfwd's one port for the victim", src)
	}
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
	opened := countOpened(t, r)
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
	type pings struct{ ok, failed int }
	pinged := make(chan pings, 1)
	go func() {
		var p pings
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for n := uint64(1); ; n++ {
			select {
			case <-stop:
				pinged <- p
				return
			case <-tick.C:
			}
			if ping(legit, legitID, n) {
				p.ok++
			} else {
				p.failed++
			}
		}
	}()

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
	}
	if !within(waitTimeout, func() bool { return k.Dropped(stats.BadMAC1) >= junk }) {
		t.Errorf("%d of %d junk initiations dropped for a bad mac1; %d sessions opened", k.Dropped(stats.BadMAC1), junk, opened.count())
	}
	took := time.Since(start)
	close(stop)
	p := <-pinged
	t.Logf("%d junk initiations dropped in %v; the legitimate client's pings during the flood: %d answered, %d not",
		k.Dropped(stats.BadMAC1), took.Round(time.Millisecond), p.ok, p.failed)
	if p.failed != 0 || p.ok == 0 {
		t.Errorf("during the flood %d pings were answered and %d were not", p.ok, p.failed)
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
	if n, live, ev := opened.count(), k.Live(), k.Events(stats.SessionOpened); n != 2 || live != 2 || ev != 2 {
		t.Errorf("%d SessionOpened events, %d live sessions, %d counted: want the two legitimate ones", n, live, ev)
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
	// Nothing grew with the number of client IDs tried.
	fdsAfter, heapAfter := openFiles(t), heapInUse()
	t.Logf("open files %d -> %d, heap in use %.1f -> %.1f MB", fds, fdsAfter, float64(heap)/1e6, float64(heapAfter)/1e6)
	if fdsAfter > fds+5 || fdsAfter < fds-5 {
		t.Errorf("open files went from %d to %d", fds, fdsAfter)
	}
	if heapAfter > heap+20<<20 {
		t.Errorf("heap in use went from %d to %d bytes", heap, heapAfter)
	}
}

// burstID is the client ID of the i-th client of a burst.
func burstID(i int) wgproto.ClientID { return wgproto.ClientID{0x40, byte(i >> 8), byte(i)} }

// 200 client IDs against a cap of 50 sessions: at most 50 open, the rest
// are refused and counted, and a client whose session existed before the
// burst keeps getting replies during and after it.
func TestSecurityMaxSessions(t *testing.T) {
	const maxSessions, clients = 50, 200
	up := newUpstream(t, "127.0.0.1:0", true)
	// The burst comes from one address: its new-session rate must allow it
	// (the built-in budget is 40 at once per source).
	r := startSecured(t, up.addr(), config.Security{MaxSessions: maxSessions, NewSessionsPerIP: 1000, NewSessionsPerIPBurst: 1000}, "127.0.0.1:0")
	opened := countOpened(t, r)
	to := r.ListenAddrs()[0]
	k := r.Counters()

	earlyID := wgproto.ClientID{0xee, 0xee, 0xee}
	early := newClient(t, "127.0.0.1:0", to)
	early.send(t, wgtest.Initiation(earlyID, 1))
	early.mustRecv(t)

	burster := newClient(t, "127.0.0.1:0", to)
	for i := range clients {
		burster.send(t, wgtest.Initiation(burstID(i), uint32(i)))
		if i == clients/2 && !ping(early, earlyID, 1) {
			t.Fatal("the early client got no reply during the burst")
		}
	}
	if !ping(early, earlyID, 2) {
		t.Fatal("the early client got no reply during the burst")
	}
	decided := func() uint64 { return k.Events(stats.SessionOpened) + k.Dropped(stats.MaxSessions) }
	eventually(t, "every attempt to be decided", func() bool { return decided() >= clients+1 })
	if n, live, ev := opened.count(), k.Live(), k.Events(stats.SessionOpened); n != maxSessions || live != maxSessions || ev != maxSessions {
		t.Errorf("%d SessionOpened events, %d live sessions, %d counted: want %d", n, live, ev, maxSessions)
	}
	if got := k.Dropped(stats.MaxSessions); got != clients+1-maxSessions {
		t.Errorf("%d dropped for max_sessions, want %d", got, clients+1-maxSessions)
	}
	if got, capped := k.TotalDropped(), k.Dropped(stats.MaxSessions); got != capped {
		t.Errorf("%d dropped, %d of them for max_sessions: want no other drops", got, capped)
	}
	ids := opened.ids()
	if ids[earlyID] != early.addr() {
		t.Errorf("the early client's session opened from %v, want %v", ids[earlyID], early.addr())
	}
	for n := range uint64(5) {
		if !ping(early, earlyID, 10+n) {
			t.Fatalf("ping %d after the burst got no reply", n)
		}
	}
	// A refused client asking again is refused again: no session was
	// evicted to make room for it.
	var refused wgproto.ClientID
	for i := range clients {
		if _, ok := ids[burstID(i)]; !ok {
			refused = burstID(i)
			break
		}
	}
	burster.send(t, wgtest.Initiation(refused, 999))
	eventually(t, "the second attempt to be refused", func() bool { return k.Dropped(stats.MaxSessions) == clients+2-maxSessions })
	list, err := r.Sessions(waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Sessions) != maxSessions {
		t.Errorf("the relay lists %d sessions, want %d", len(list.Sessions), maxSessions)
	}
	for _, s := range list.Sessions {
		if _, ok := ids[s.Client]; !ok {
			t.Errorf("session of %v is live but was never reported opened", s.Client)
		}
	}
}

// --max-sessions-per-ip applies to each source address on its own.
func TestSecurityMaxSessionsPerIP(t *testing.T) {
	const perIP, each = 2, 5
	up := newUpstream(t, "127.0.0.1:0", true)
	r := startSecured(t, up.addr(), config.Security{MaxSessionsPerIP: perIP}, "127.0.0.1:0", "[::1]:0")
	opened := countOpened(t, r)
	k := r.Counters()
	sources := []string{"127.0.0.1:0", "127.0.0.2:0", "[::1]:0"}
	for si, src := range sources {
		c := newClient(t, src, listenerFor(t, r, src))
		for i := range each {
			c.send(t, wgtest.Initiation(wgproto.ClientID{0x50, byte(si + 1), byte(i + 1)}, uint32(i)))
		}
	}
	total := uint64(len(sources) * each)
	eventually(t, "every attempt to be decided", func() bool {
		return k.Events(stats.SessionOpened)+k.Dropped(stats.MaxSessionsPerIP) >= total
	})
	perSource := map[netip.Addr]int{}
	for _, from := range opened.ids() {
		perSource[from.Addr()]++
	}
	for _, src := range sources {
		if a := netip.MustParseAddrPort(src).Addr(); perSource[a] != perIP {
			t.Errorf("%d sessions from %v, want %d", perSource[a], a, perIP)
		}
	}
	if got, want := k.Dropped(stats.MaxSessionsPerIP), uint64(len(sources)*(each-perIP)); got != want {
		t.Errorf("%d dropped for max_sessions_per_ip, want %d", got, want)
	}
	if got := k.Live(); got != len(sources)*perIP {
		t.Errorf("%d live sessions, want %d", got, len(sources)*perIP)
	}
}

// --new-sessions-per-ip: a burst of new client IDs from one source beyond
// the burst size is refused, another source is not held back, and the
// refused client is let in once time has refilled the source's bucket.
func TestSecurityNewSessionsPerIP(t *testing.T) {
	const (
		perSecond = 2
		burst     = 3
		attempts  = 6
	)
	up := newUpstream(t, "127.0.0.1:0", true)
	r := startSecured(t, up.addr(), config.Security{NewSessionsPerIP: perSecond, NewSessionsPerIPBurst: burst}, "127.0.0.1:0")
	opened := countOpened(t, r)
	k := r.Counters()
	to := r.ListenAddrs()[0]

	one := newClient(t, "127.0.0.1:0", to)
	start := time.Now()
	for i := range attempts {
		one.send(t, wgtest.Initiation(burstID(i), uint32(i)))
	}
	eventually(t, "every attempt to be decided", func() bool {
		return k.Events(stats.SessionOpened)+k.Dropped(stats.NewSessionRate) >= attempts
	})
	if got := opened.count(); got != burst {
		t.Fatalf("%d sessions opened by a burst of %d, want %d", got, attempts, burst)
	}
	if got := k.Dropped(stats.NewSessionRate); got != attempts-burst {
		t.Errorf("%d dropped for new_session_rate, want %d", got, attempts-burst)
	}

	// Another source has a bucket of its own.
	two := newClient(t, "127.0.0.2:0", to)
	otherID := wgproto.ClientID{0x60, 0x00, 0x02}
	two.send(t, wgtest.Initiation(otherID, 1))
	two.mustRecv(t)

	// The first source's refused client retries, as WireGuard does, until
	// it is let in: not before the bucket has a token again.
	var refused wgproto.ClientID
	ids := opened.ids()
	for i := range attempts {
		if _, ok := ids[burstID(i)]; !ok {
			refused = burstID(i)
			break
		}
	}
	tries := 0
	deadline := time.Now().Add(waitTimeout)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("the refused client was not let in after %d tries", tries)
		}
		refusals := k.Dropped(stats.NewSessionRate)
		one.send(t, wgtest.Initiation(refused, uint32(100+tries)))
		tries++
		eventually(t, "the retry to be decided", func() bool {
			_, in := opened.ids()[refused]
			return in || k.Dropped(stats.NewSessionRate) > refusals
		})
		if _, in := opened.ids()[refused]; in {
			break
		}
		time.Sleep(20 * time.Millisecond) // the retry interval, not a wait for an event
	}
	// The limiter was made at the burst's first admission, full; its next
	// token comes 1/perSecond after that, and no earlier.
	if took := time.Since(start); took < time.Second/perSecond {
		t.Errorf("the refused client was let in %v after the burst; the rate allows it after %v", took, time.Second/perSecond)
	}
	t.Logf("the refused client was let in after %d tries, %v after the burst", tries, time.Since(start).Round(time.Millisecond))
	if got := opened.count(); got != burst+2 {
		t.Errorf("%d sessions, want %d", got, burst+2)
	}
}

// The client ID allow-list (IDs given in the three forms WARP tools print)
// and the source CIDR allow and deny lists admit and refuse as configured,
// over IPv4 and IPv6.
func TestSecurityAllowLists(t *testing.T) {
	parseID := func(s string) wgproto.ClientID {
		id, err := wgproto.ParseClientID(s)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	prefixes := func(ss ...string) []netip.Prefix {
		var ps []netip.Prefix
		for _, s := range ss {
			ps = append(ps, netip.MustParsePrefix(s))
		}
		return ps
	}
	const (
		v4    = "127.0.0.1:0"
		v4two = "127.0.0.2:0"
		v6    = "[::1]:0"
	)
	type attempt struct {
		from  string
		id    wgproto.ClientID
		admit bool
		why   stats.Reason // if refused
	}
	qBoV := parseID("qBoV")       // a81a15
	hex := parseID("0a0b0c")      // 0a0b0c
	triple := parseID("1, 2, 3")  // 010203
	other := parseID("[9, 9, 9]") // 090909
	tests := []struct {
		name     string
		sec      config.Security
		attempts []attempt
	}{
		{"client IDs", config.Security{AllowClients: []wgproto.ClientID{qBoV, hex, triple}}, []attempt{
			{v4, qBoV, true, 0},
			{v4two, hex, true, 0},
			{v6, triple, true, 0},
			{v4, other, false, stats.ClientNotAllowed},
			{v6, wgproto.ClientID{0xa8, 0x1a, 0x16}, false, stats.ClientNotAllowed},
		}},
		{"allow CIDR", config.Security{AllowCIDRs: prefixes("127.0.0.1/32")}, []attempt{
			{v4, qBoV, true, 0},
			{v4two, hex, false, stats.SourceNotAllowed},
			{v6, triple, false, stats.SourceNotAllowed},
		}},
		{"deny CIDR", config.Security{DenyCIDRs: prefixes("127.0.0.2/32")}, []attempt{
			{v4, qBoV, true, 0},
			{v4two, hex, false, stats.SourceNotAllowed},
			{v6, triple, true, 0},
		}},
		{"deny wins over allow", config.Security{AllowCIDRs: prefixes("127.0.0.0/8", "::1/128"), DenyCIDRs: prefixes("127.0.0.2/32")}, []attempt{
			{v4, qBoV, true, 0},
			{v4two, hex, false, stats.SourceNotAllowed},
			{v6, triple, true, 0},
		}},
		{"allow IPv6", config.Security{AllowCIDRs: prefixes("::1/128")}, []attempt{
			{v6, qBoV, true, 0},
			{v4, hex, false, stats.SourceNotAllowed},
		}},
		{"deny IPv6", config.Security{DenyCIDRs: prefixes("::/0")}, []attempt{
			{v6, qBoV, false, stats.SourceNotAllowed},
			{v4, hex, true, 0},
		}},
		{"client IDs and sources", config.Security{AllowClients: []wgproto.ClientID{qBoV, hex}, AllowCIDRs: prefixes("127.0.0.1/32")}, []attempt{
			{v4, qBoV, true, 0},
			{v4two, hex, false, stats.SourceNotAllowed},
			{v4, other, false, stats.ClientNotAllowed},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, "127.0.0.1:0", true)
			r := startSecured(t, up.addr(), tt.sec, "127.0.0.1:0", "[::1]:0")
			opened := countOpened(t, r)
			k := r.Counters()
			wantRefused := map[stats.Reason]uint64{}
			admitted := map[wgproto.ClientID]bool{}
			clients := make([]*client, len(tt.attempts))
			for i, a := range tt.attempts {
				clients[i] = newClient(t, a.from, listenerFor(t, r, a.from))
				clients[i].send(t, wgtest.Initiation(a.id, uint32(i+1)))
				if a.admit {
					admitted[a.id] = true
				} else {
					wantRefused[a.why]++
				}
			}
			eventually(t, "every attempt to be decided", func() bool {
				return k.Events(stats.SessionOpened)+k.TotalDropped() >= uint64(len(tt.attempts))
			})
			ids := opened.ids()
			for i, a := range tt.attempts {
				from, in := ids[a.id]
				switch {
				case a.admit && !in:
					t.Errorf("%v from %s was refused", a.id, a.from)
				case a.admit && from != clients[i].addr():
					t.Errorf("%v opened from %v, want %v", a.id, from, clients[i].addr())
				case !a.admit && in:
					t.Errorf("%v from %s was admitted", a.id, a.from)
				}
				if a.admit {
					if got := clients[i].mustRecv(t); wgproto.ClientID(got[1:4]) != a.id {
						t.Errorf("%v got a reply for %x", a.id, got[1:4])
					}
				}
			}
			if len(ids) != len(admitted) {
				t.Errorf("%d sessions opened, want %d", len(ids), len(admitted))
			}
			var refused uint64
			for reason, n := range wantRefused {
				refused += n
				if got := k.Dropped(reason); got != n {
					t.Errorf("%d dropped for %s, want %d", got, reason, n)
				}
			}
			if got := k.TotalDropped(); got != refused {
				t.Errorf("%d dropped in all, want %d", got, refused)
			}
			// What reached the upstream: the admitted clients' initiations.
			for range admitted {
				if d := up.next(t); !admitted[wgproto.ClientID(d.data[1:4])] {
					t.Errorf("the upstream got a datagram of refused client %x", d.data[1:4])
				}
			}
		})
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

// rateBlast is how long the rate-limit test sends, and the pace: a batch
// every rateTick, well over any limit tested.
const (
	rateBlast = 600 * time.Millisecond
	rateTick  = 2 * time.Millisecond
	rateBatch = 10
)

// A client held to a rate limit gets about burst + rate*t of a blast
// through, in each direction, and the rest is dropped and counted; its
// handshakes pass while it is over the limit.
func TestSecurityClientRate(t *testing.T) {
	for _, tc := range []rateCase{
		{"datagrams", limits.Limits{DatagramsPerSecond: 200, DatagramBurst: 50}, 64, 50, 200},
		{"bytes", limits.Limits{BytesPerSecond: 200 << 10, ByteBurst: 64 << 10}, 1024, 64, 200},
	} {
		t.Run(tc.name, func(t *testing.T) { testClientRate(t, tc) })
	}
}

// checkRate checks that passed datagrams fit the limit over a blast sent in
// sending, with the limiter running at most for window.
func checkRate(t *testing.T, dir string, tc rateCase, passed, sent uint64, sending, window time.Duration) {
	t.Helper()
	lo := uint64(float64(tc.burst) + tc.perSecond*sending.Seconds()/2)
	hi := uint64(float64(tc.burst) + tc.perSecond*window.Seconds() + 1)
	t.Logf("%s: %d of %d datagrams passed in %v; expected about %.0f, allowed %d..%d", dir, passed, sent,
		sending.Round(time.Millisecond), float64(tc.burst)+tc.perSecond*sending.Seconds(), lo, hi)
	if passed < lo || passed > hi {
		t.Errorf("%s: %d datagrams passed, want %d..%d", dir, passed, lo, hi)
	}
}

// blast sends what next returns every rateTick, rateBatch at a time, for
// rateBlast, and midway also extra once. It returns how many it sent and
// for how long.
func blast(t *testing.T, send func([]byte) error, msg, extra []byte) (int, time.Duration) {
	t.Helper()
	sent := 0
	start := time.Now()
	tick := time.NewTicker(rateTick)
	defer tick.Stop()
	for now := range tick.C {
		if now.Sub(start) >= rateBlast {
			break
		}
		if extra != nil && now.Sub(start) >= rateBlast/2 {
			if err := send(extra); err != nil {
				t.Fatal(err)
			}
			extra = nil
		}
		for range rateBatch {
			if err := send(msg); err != nil {
				t.Fatal(err)
			}
			sent++
		}
	}
	return sent, time.Since(start)
}

func testClientRate(t *testing.T, tc rateCase) {
	id := wgproto.ClientID{0x70, 0x70, byte(tc.size >> 4)}
	up := newUpstream(t, "127.0.0.1:0", false)
	opening := time.Now()
	// The limit with its bursts, as Security.ClientRate would add it (last
	// in the chain); the config sets no bursts (one second's worth).
	r := startConfig(t, relayConfig(t, up.addr(), nil, "127.0.0.1:0"), relay.WithPolicy(policy.ClientRate(tc.lim, nil)))
	k := r.Counters()
	c := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	c.send(t, wgtest.Initiation(id, 1))
	port := up.next(t).from
	up.sendTo(t, port, wgtest.Response(id, 77, 1))
	c.mustRecv(t)

	// Up: the client blasts transport messages; midway, over its limit,
	// it sends a handshake initiation, which must pass.
	send := func(b []byte) error { _, err := c.conn.WriteToUDPAddrPort(b, c.to); return err }
	const rekey = 4242
	sent, sending := blast(t, send, wgtest.Transport(id, 77, 1, tc.size), wgtest.Initiation(id, rekey))
	total := uint64(sent + 2) // and the two initiations
	eventually(t, "the relay to account for the blast", func() bool {
		return k.Datagrams(stats.FromClient) == total && k.Datagrams(stats.ToUpstream)+k.Dropped(stats.ClientRate) == total
	})
	checkRate(t, "client to upstream", tc, k.Datagrams(stats.ToUpstream)-2, uint64(sent), sending, time.Since(opening))
	rekeyed := false
	for _, d := range up.drain() {
		if h, v := wgproto.Parse(d.data); v == wgproto.OK && h.Type == wgproto.TypeInitiation && h.Index == rekey {
			rekeyed = true
		}
	}
	if !rekeyed {
		t.Error("the initiation sent over the limit did not reach the upstream")
	}

	// Down: the upstream blasts transport messages to the client; midway
	// it answers the handshake, and the response must reach the client.
	dropsUp, toClient := k.Dropped(stats.ClientRate), k.Datagrams(stats.ToClient)
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
	opening = time.Now()
	sendDown := func(b []byte) error { _, err := up.conn.WriteToUDPAddrPort(b, port); return err }
	sent, sending = blast(t, sendDown, wgtest.Transport(id, 1, 1, tc.size), wgtest.Response(id, 78, rekey))
	total = uint64(sent + 1)
	eventually(t, "the relay to account for the blast back", func() bool {
		return k.Datagrams(stats.ToClient)-toClient+k.Dropped(stats.ClientRate)-dropsUp == total
	})
	// The down bucket has been full since the session started.
	checkRate(t, "upstream to client", tc, k.Datagrams(stats.ToClient)-toClient-1, uint64(sent), sending, time.Since(opening))
	if !<-responded {
		t.Error("the handshake response sent over the limit did not reach the client")
	}
	if got, limited := k.TotalDropped(), k.Dropped(stats.ClientRate); got != limited {
		t.Errorf("%d dropped, %d of them for client_rate: want no other drops", got, limited)
	}
}

// Someone who knows a client ID cannot lock the client out: forged
// datagrams from their address spend only their own budget, so the
// client's handshake from a new network still reaches the upstream; and
// they do not keep the client's session alive.
func TestSecurityNoLockout(t *testing.T) {
	const idle = 400 * time.Millisecond
	up := newUpstream(t, "127.0.0.1:0", false)
	r := startRelay(t, "127.0.0.1:0", up.addr(), idle)
	ev := watchEvents(t, r)
	wifi := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	wifi.send(t, wgtest.Initiation(idA, 1))
	sessionPort := up.next(t).from
	opened := await[*messages.SessionOpened](t, ev)
	up.sendTo(t, sessionPort, wgtest.Response(idA, 50000, 1)) // the handshake completes; no forged index below matches
	wifi.mustRecv(t)

	// The attacker: far over any budget, transports and initiations.
	attacker := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	for i := 0; i < 300; i++ {
		attacker.send(t, wgtest.Transport(idA, uint32(i), uint64(i), 64))
		attacker.send(t, wgtest.Initiation(idA, uint32(1000+i)))
	}
	eventually(t, "the attacker's budget to run out", func() bool {
		return r.Counters().Dropped(stats.UnconfirmedRate) > 0 && r.Counters().Dropped(stats.UnconfirmedTransport) == 300
	})
	// The client moves to another network (another address) and
	// hand-shakes from there: its initiation reaches the upstream.
	cell := newClient(t, "127.0.0.2:0", r.ListenAddrs()[0])
	genuine := wgtest.Initiation(idA, 777777)
	cell.send(t, genuine)
	deadline := time.Now().Add(waitTimeout)
	for {
		got := up.next(t)
		if bytes.Equal(got.data, genuine) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the client's handshake from a new network did not reach the upstream")
		}
	}

	// Forged datagrams every 20 ms do not keep the session from expiring,
	// while the upstream keeps talking: only the client's side can expire.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := uint64(0); ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				attacker.conn.WriteToUDPAddrPort(wgtest.Transport(idA, 5, i, 64), attacker.to)
				up.conn.WriteToUDPAddrPort(wgtest.Transport(idA, 1, i, 64), sessionPort)
			}
		}
	}()
	defer func() { close(stop); <-done }()
	expired := await[*messages.SessionExpired](t, ev)
	if expired.Session != opened.Session || expired.Side != "client" {
		t.Fatalf("expired %+v, want the client side of %v", expired, opened.Session)
	}
}
