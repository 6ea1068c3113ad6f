package relay_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/roam"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// portsUpstream is an echo upstream that remembers, by client ID, every
// source address a datagram of that client came from: a session keeps its
// upstream port if its client has one.
type portsUpstream struct {
	conn *net.UDPConn
	mu   sync.Mutex
	from map[wgproto.ClientID]map[netip.AddrPort]bool
}

func newPortsUpstream(t *testing.T, addr string) *portsUpstream {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	u := &portsUpstream{conn: c, from: map[wgproto.ClientID]map[netip.AddrPort]bool{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n >= 4 {
				id := wgproto.ClientID(buf[1:4])
				u.mu.Lock()
				if u.from[id] == nil {
					u.from[id] = map[netip.AddrPort]bool{}
				}
				u.from[id][from] = true
				u.mu.Unlock()
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return u
}

func (u *portsUpstream) addr() netip.AddrPort { return u.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// sources returns the source addresses the client's datagrams came from.
func (u *portsUpstream) sources(id wgproto.ClientID) []netip.AddrPort {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []netip.AddrPort
	for a := range u.from[id] {
		out = append(out, a)
	}
	return out
}

// pingPong sends one transport datagram of id and waits, within the
// generous waitTimeout, for its echo; it returns the reply's source (the
// relay's listening socket that sent it).
func pingPong(c *client, id wgproto.ClientID, n uint64) (netip.AddrPort, error) {
	msg := wgtest.Transport(id, 1, n, 64)
	if _, err := c.conn.WriteToUDPAddrPort(msg, c.to); err != nil {
		return netip.AddrPort{}, err
	}
	buf := make([]byte, 2048)
	c.conn.SetReadDeadline(time.Now().Add(waitTimeout))
	for {
		k, from, err := c.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("client %v: datagram %d not answered within %v: %w", id, n, waitTimeout, err)
		}
		if bytes.Equal(buf[:k], msg) {
			return from, nil
		}
		// an earlier reply (the session's opening initiation): read on
	}
}

// openEchoed opens id's session from c: its initiation comes back.
func openEchoed(t *testing.T, c *client, id wgproto.ClientID) {
	t.Helper()
	c.send(t, wgtest.Initiation(id, 1))
	if got := c.mustRecv(t); !bytes.Equal(got, wgtest.Initiation(id, 1)) {
		t.Fatalf("client %v: the initiation did not come back", id)
	}
}

// Fifty reloads that change the settings a reload applies in place, under
// ping-pong traffic: every datagram sent is answered, no session ends or
// moves to another upstream port, the listening socket stays, and nothing
// is dropped.
func TestReloadStormInPlace(t *testing.T) {
	up := newPortsUpstream(t, "127.0.0.1:0")
	ids := []wgproto.ClientID{{1, 1, 1}, {2, 2, 2}, {3, 3, 3}, {4, 4, 4}}
	base := func(edit func(*config.Relay)) config.Relay {
		return relayConfig(t, up.addr(), func(c *config.Relay) {
			c.IdleTimeout = time.Minute
			if edit != nil {
				edit(c)
			}
		}, "127.0.0.1:0")
	}
	r := startConfig(t, base(nil))
	ev := watchEvents(t, r)
	listen := r.ListenAddrs()
	clients := make([]*client, len(ids))
	for i, id := range ids {
		clients[i] = newClient(t, "127.0.0.1:0", listen[0])
		openEchoed(t, clients[i], id)
	}

	edits := []func(*config.Relay){
		func(c *config.Relay) { c.IdleTimeout = 2 * time.Minute },
		func(c *config.Relay) { c.Security.MaxSessions = 100 },
		func(c *config.Relay) { c.Security.MaxSessions = 10; c.Security.MaxSessionsPerIP = 8 },
		func(c *config.Relay) {
			c.Security.ClientRate = config.ClientRate{DatagramsPerSecond: 1e6, BytesPerSecond: 1 << 30}
		},
		func(c *config.Relay) { c.ReadBuffer, c.WriteBuffer = 1<<20, 512<<10 },
		func(c *config.Relay) { c.ReadBuffer, c.WriteBuffer, c.NoGSO = 2<<20, 2<<20, true },
		func(c *config.Relay) { c.Security.AllowClients = append(append([]wgproto.ClientID{}, ids...), idA) },
		func(c *config.Relay) { c.Security.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} },
		func(c *config.Relay) { c.Security.DenyCIDRs = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")} },
		func(c *config.Relay) { c.Security.NewSessionsPerIP, c.Security.NewSessionsPerIPBurst = 5, 10 },
		func(c *config.Relay) { c.ResolveInterval = time.Hour },
	}

	stop := make(chan struct{})
	errs := make(chan error, len(ids))
	answered := make([]atomic.Int64, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := uint64(1); ; n++ {
				if _, err := pingPong(clients[i], id, n); err != nil {
					errs <- err
					return
				}
				answered[i].Add(1)
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	var last config.Relay
	for i := range 50 {
		// Each reload changes one or two settings from the base, so every
		// one differs from the one before.
		last = base(func(c *config.Relay) {
			edits[i%len(edits)](c)
			if i%3 == 0 {
				edits[(i+5)%len(edits)](c)
			}
		})
		seen := make([]int64, len(ids))
		for j := range ids {
			seen[j] = answered[j].Load()
		}
		if err := r.Reconfigure(last); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		// Every client goes on through each reload before the next.
		eventually(t, "every client to be answered after the reload", func() bool {
			for j := range ids {
				if answered[j].Load() <= seen[j] && len(errs) == 0 {
					return false
				}
			}
			return true
		})
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := r.Config(); !got.Equal(&last) {
		t.Errorf("the relay runs %+v, not the last configuration %+v", got, last)
	}
	for _, id := range ids {
		if src := up.sources(id); len(src) != 1 {
			t.Errorf("client %v reached the upstream from %v; want one port throughout", id, src)
		}
	}
	if got := r.ListenAddrs(); len(got) != 1 || got[0] != listen[0] {
		t.Errorf("listening on %v after the reloads, before on %v", got, listen)
	}
	for _, reason := range stats.Reasons() {
		if n := r.Counters().Dropped(reason); n != 0 {
			t.Errorf("%d datagrams dropped as %s", n, reason)
		}
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	for _, e := range ev.all {
		if _, opened := e.(*messages.SessionOpened); !opened {
			t.Errorf("event %T during the reloads", e)
		}
	}
}

// A reload that changes the listen addresses binds only what is new and
// closes only what was removed: a session on a socket that stays keeps
// sending and receiving by it (the listener indexes do not shift), a
// session whose socket was removed moves to a new one when its client
// sends there, and both keep their upstream ports. The state file names
// each session's socket by its place in the new listen list.
func TestReloadListenAddresses(t *testing.T) {
	up := newPortsUpstream(t, "127.0.0.1:0")
	held, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	fixed := held.LocalAddr().(*net.UDPAddr).AddrPort().String()
	held.Close()
	r := startConfig(t, relayConfig(t, up.addr(), nil, fixed, "[::1]:0"))
	before := r.ListenAddrs()
	a := newClient(t, "127.0.0.1:0", before[0])
	b := newClient(t, "[::1]:0", before[1])
	openEchoed(t, a, idA)
	openEchoed(t, b, idB)
	portA, portB := up.sources(idA), up.sources(idB)

	// The first address goes, the second stays, a third comes.
	if err := r.Reconfigure(relayConfig(t, up.addr(), nil, "[::1]:0", "127.0.0.1:0")); err != nil {
		t.Fatal(err)
	}
	after := r.ListenAddrs()
	if len(after) != 2 || after[0] != before[1] || after[1] == before[0] {
		t.Fatalf("listening on %v, before on %v; want the second kept and a new one", after, before)
	}
	if c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(before[0])); err != nil {
		t.Errorf("the removed address is still held: %v", err)
	} else {
		c.Close()
	}
	// b's socket stayed: its replies still leave by it.
	if from, err := pingPong(b, idB, 2); err != nil || from != before[1] {
		t.Fatalf("the kept socket's session: reply from %v (%v), want %v", from, err, before[1])
	}
	// a sends to the new socket: its session follows, replies leave by it.
	a.to = after[1]
	if from, err := pingPong(a, idA, 2); err != nil || from != after[1] {
		t.Fatalf("the moved session: reply from %v (%v), want %v", from, err, after[1])
	}
	if got := up.sources(idA); len(got) != 1 || got[0] != portA[0] {
		t.Errorf("session A reached the upstream from %v, before from %v", got, portA)
	}
	if got := up.sources(idB); len(got) != 1 || got[0] != portB[0] {
		t.Errorf("session B reached the upstream from %v, before from %v", got, portB)
	}

	saved, err := r.Snapshot(waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	places := map[wgproto.ClientID]uint8{}
	for _, s := range saved {
		var st roam.State
		if err := json.Unmarshal(s.Roam, &st); err != nil {
			t.Fatal(err)
		}
		places[s.Client] = st.Listener
	}
	if places[idB] != 0 || places[idA] != 1 {
		t.Errorf("saved listening sockets %v; want B on the first of the new list, A on the second", places)
	}
}

// A reload whose new listen address cannot be bound changes nothing.
func TestReloadRefusedChangesNothing(t *testing.T) {
	up := newPortsUpstream(t, "127.0.0.1:0")
	cfg := relayConfig(t, up.addr(), nil, "127.0.0.1:0")
	r := startConfig(t, cfg)
	c := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	openEchoed(t, c, idA)
	taken := newClient(t, "127.0.0.1:0", up.addr())
	err := r.Reconfigure(relayConfig(t, up.addr(), func(c *config.Relay) { c.IdleTimeout = time.Hour }, "127.0.0.1:0", taken.addr().String()))
	if err == nil {
		t.Fatal("a reload onto a taken address was applied")
	}
	if got := r.Config(); !got.Equal(&cfg) {
		t.Errorf("the refused reload changed the configuration to %+v", got)
	}
	if _, err := pingPong(c, idA, 2); err != nil {
		t.Fatal(err)
	}
	// A change of mode is not made in place.
	err = r.Reconfigure(relayConfig(t, up.addr(), func(c *config.Relay) { c.Mode = config.ModeForward }, "127.0.0.1:0"))
	if !errors.Is(err, relay.ErrRestart) {
		t.Errorf("a change of mode: %v, want ErrRestart", err)
	}
	if got := r.Config(); !got.Equal(&cfg) {
		t.Errorf("the refused change of mode changed the configuration to %+v", got)
	}
}

// Live sessions the new allow-lists refuse end; the others go on. A new
// session of a refused client is refused too.
func TestReloadAllowListEndsSessions(t *testing.T) {
	up := newPortsUpstream(t, "127.0.0.1:0")
	r := startConfig(t, relayConfig(t, up.addr(), nil, "127.0.0.1:0"))
	ev := watchEvents(t, r)
	a := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	b := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	openEchoed(t, a, idA)
	openEchoed(t, b, idB)
	if err := r.Reconfigure(relayConfig(t, up.addr(), func(c *config.Relay) {
		c.Security.AllowClients = []wgproto.ClientID{idA}
	}, "127.0.0.1:0")); err != nil {
		t.Fatal(err)
	}
	closed := await[*messages.SessionClosed](t, ev)
	if closed.Client != idB {
		t.Fatalf("session of %v closed, want %v's", closed.Client, idB)
	}
	if _, err := pingPong(a, idA, 2); err != nil {
		t.Fatal(err)
	}
	before := r.Counters().Dropped(stats.ClientNotAllowed)
	b.send(t, wgtest.Initiation(idB, 2))
	eventually(t, "the refused client's initiation to be dropped", func() bool {
		return r.Counters().Dropped(stats.ClientNotAllowed) == before+1
	})
}

// A new upstream: live sessions of the old one end, new sessions go to the
// new one.
func TestReloadUpstream(t *testing.T) {
	up1, up2 := newPortsUpstream(t, "127.0.0.1:0"), newPortsUpstream(t, "127.0.0.1:0")
	r := startConfig(t, relayConfig(t, up1.addr(), nil, "127.0.0.1:0"))
	ev := watchEvents(t, r)
	c := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	openEchoed(t, c, idA)
	if err := r.Reconfigure(relayConfig(t, up2.addr(), nil, "127.0.0.1:0")); err != nil {
		t.Fatal(err)
	}
	if closed := await[*messages.SessionClosed](t, ev); closed.Upstream != up1.addr() {
		t.Fatalf("closed a session to %v, want the one to the old upstream %v", closed.Upstream, up1.addr())
	}
	openEchoed(t, c, idA)
	if len(up2.sources(idA)) != 1 {
		t.Fatal("the new session did not go to the new upstream")
	}
}

// A shorter idle timeout applies to live sessions at once: one idle for
// longer ends now.
func TestReloadIdleTimeout(t *testing.T) {
	up := newPortsUpstream(t, "127.0.0.1:0")
	r := startConfig(t, relayConfig(t, up.addr(), func(c *config.Relay) { c.IdleTimeout = time.Hour }, "127.0.0.1:0"))
	ev := watchEvents(t, r)
	c := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	openEchoed(t, c, idA)
	time.Sleep(20 * time.Millisecond) // idle for longer than the new timeout
	if err := r.Reconfigure(relayConfig(t, up.addr(), func(c *config.Relay) { c.IdleTimeout = 10 * time.Millisecond }, "127.0.0.1:0")); err != nil {
		t.Fatal(err)
	}
	expired := await[*messages.SessionExpired](t, ev)
	if expired.Client != idA || expired.Timeout != 10*time.Millisecond {
		t.Fatalf("expired %v after %v; want %v after the new timeout", expired.Client, expired.Timeout, idA)
	}
}
