package relay_test

// The session caps (issue 6): max_sessions and max_sessions_per_ip hold
// however many client IDs ask, and sessions that exist keep working.
// Loopback only.

import (
	"net/netip"
	"testing"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// 200 client IDs against a cap of 50 sessions: at most 50 open, the rest
// are refused and counted, and a client whose session existed before the
// burst keeps getting replies during and after it.
func TestSecurityMaxSessions(t *testing.T) {
	const maxSessions, clients = 50, 200
	up := newUpstream(t, "127.0.0.1:0", true)
	// The burst comes from one address: its new-session rate must allow it.
	r := startSecured(t, up.addr(), config.Security{MaxSessions: maxSessions, NewSessionsPerIP: 1000, NewSessionsPerIPBurst: 1000}, "127.0.0.1:0")
	ev := watchEvents(t, r)
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
	// Wait for the events of the sessions opened, not their counter,
	// which moves first.
	decided := func() uint64 { return uint64(count[*messages.SessionOpened](ev)) + k.Dropped(stats.MaxSessions) }
	eventually(t, "every attempt to be decided", func() bool { return decided() >= clients+1 })
	if n, live, counted := count[*messages.SessionOpened](ev), k.Live(), k.Events(stats.SessionOpened); n != maxSessions || live != maxSessions || counted != maxSessions {
		t.Errorf("%d SessionOpened events, %d live sessions, %d counted: want %d", n, live, counted, maxSessions)
	}
	if got := k.Dropped(stats.MaxSessions); got != clients+1-maxSessions {
		t.Errorf("%d dropped for max_sessions, want %d", got, clients+1-maxSessions)
	}
	if got, capped := k.TotalDropped(), k.Dropped(stats.MaxSessions); got != capped {
		t.Errorf("%d dropped, %d of them for max_sessions: want no other drops", got, capped)
	}
	ids := ev.opened()
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
	ev := watchEvents(t, r)
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
		return uint64(count[*messages.SessionOpened](ev))+k.Dropped(stats.MaxSessionsPerIP) >= total
	})
	perSource := map[netip.Addr]int{}
	for _, from := range ev.opened() {
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
