package relay_test

// Hijack attempts (issue 6): someone who knows a client's ID forges its
// datagrams, against a real WireGuard client, and cannot take, break or
// lock out its session. Loopback only.

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/warptest"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

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
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
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
	if n := count[*messages.ClientRoamed](b.events); n != 0 {
		t.Errorf("udpfwd published %d ClientRoamed events during the attack", n)
	}
	if b.events.roamed(victim, attackerAddr) {
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
	eventually(t, "the forged datagrams to be dropped", func() bool {
		return k.Dropped(stats.BadMAC1) == uint64(wantBadMAC1) && forwarded() <= budget()
	}, func() string {
		return fmt.Sprintf("%d dropped for bad mac1 (want %d), %d forwarded upstream (budget %d)",
			k.Dropped(stats.BadMAC1), wantBadMAC1, forwarded(), budget())
	})
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
	eventually(t, "ClientRoamed to the new port", func() bool { return b.events.roamed(victim, moved) })
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
	eventually(t, "ClientRoamed after the handshake", func() bool { return b.events.roamed(moved, again) })
	if err := c.Echo(ctx, []byte("after a handshake from a new port")); err != nil {
		t.Fatal(err)
	}
	if n := count[*messages.ClientRoamed](b.events); n != 2 {
		t.Errorf("udpfwd published %d ClientRoamed events, want 2", n)
	}
	if src := b.edge.Router().Sources(); len(src) != 1 {
		t.Errorf("the edge saw sources %v, want udpfwd's one port for the victim", src)
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

	// Until the attack is over, the client keeps its session alive from its
	// confirmed address, as a WireGuard keepalive would, so that the
	// session is still the one attacked however slow the machine is.
	stopKeepalive, keptAlive := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(keptAlive)
		for i := uint64(0); ; i++ {
			select {
			case <-stopKeepalive:
				return
			case <-time.After(idle / 8):
				wifi.conn.WriteToUDPAddrPort(wgtest.Transport(idA, 50000, i, 32), wifi.to)
			}
		}
	}()
	defer func() {
		select {
		case <-stopKeepalive:
		default:
			close(stopKeepalive)
		}
		<-keptAlive
	}()

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
	// hand-shakes from there: its initiation reaches the upstream, through
	// the session's port.
	cell := newClient(t, "127.0.0.2:0", r.ListenAddrs()[0])
	genuine := wgtest.Initiation(idA, 777777)
	cell.send(t, genuine)
	for deadline := time.Now().Add(waitTimeout); ; {
		if time.Now().After(deadline) {
			t.Fatal("the client's handshake from a new network did not reach the upstream")
		}
		got := up.next(t)
		if bytes.Equal(got.data, genuine) {
			if got.from != sessionPort {
				t.Fatalf("the handshake from a new network came from %v, want the session's port %v", got.from, sessionPort)
			}
			break
		}
	}
	close(stopKeepalive)
	<-keptAlive

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
