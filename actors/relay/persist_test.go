package relay_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/state"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// Sessions saved by one relay are restored by the next on the same upstream
// ports, so the upstream sees the same 4-tuples; a port that is taken in
// the meantime gets a new one, reported as rebound.
func TestRestoreKeepsUpstreamPorts(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0", true)
	first, err := relay.Start(relayConfig(t, up.addr(), nil, "127.0.0.1:0"), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	a := newClient(t, "127.0.0.1:0", first.ListenAddrs()[0])
	b := newClient(t, "127.0.0.1:0", first.ListenAddrs()[0])
	a.send(t, wgtest.Initiation(idA, 1))
	portA := up.next(t).from
	a.mustRecv(t)
	b.send(t, wgtest.Initiation(idB, 1))
	portB := up.next(t).from
	b.mustRecv(t)
	saved, err := first.Snapshot(waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if len(saved) != 2 {
		t.Fatalf("snapshot holds %d sessions, want 2", len(saved))
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	// Something else takes B's old port while the relay is down.
	squatter, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(portB))
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()

	log := zaptest.NewLogger(t)
	system := relay.NewSystem(log)
	defer system.Shutdown()
	ev := watchSystem(t, system) // before Start: restoring publishes at once
	second, err := relay.Start(relayConfig(t, up.addr(), nil, "127.0.0.1:0"), log,
		relay.WithSystem(system), relay.WithRestore(saved))
	if err != nil {
		t.Fatal(err)
	}
	noDeadLetters(t, second)
	defer second.Close()
	a.to, b.to = second.ListenAddrs()[0], second.ListenAddrs()[0]

	// Restored sessions are admitted again by their policies, then opened.
	restored := map[string]*messages.SessionRestored{}
	for range 2 {
		e := await[*messages.SessionRestored](t, ev)
		restored[e.Client.String()] = e
	}
	// A transport datagram needs a session: these only get through restored.
	a.send(t, wgtest.Transport(idA, 1, 1, 64))
	if got := up.next(t); got.from != portA {
		t.Fatalf("after the restart A's datagrams come from %v, want %v", got.from, portA)
	}
	if reply := a.mustRecv(t); reply[0] != 4 {
		t.Fatal("A got no reply after the restart")
	}
	b.send(t, wgtest.Transport(idB, 1, 1, 64))
	gotB := up.next(t)
	if gotB.from == portB {
		t.Fatal("B's old port was taken, yet B uses it")
	}
	b.mustRecv(t)
	if e := restored[idA.String()]; e == nil || e.Rebound || e.UpstreamLocal != portA {
		t.Fatalf("A restored as %+v, want on %v", e, portA)
	}
	if e := restored[idB.String()]; e == nil || !e.Rebound || e.Wanted != portB || e.UpstreamLocal != gotB.from {
		t.Fatalf("B restored as %+v, want rebound from %v to %v", e, portB, gotB.from)
	}
}

// A saved session whose upstream port is outside today's upstream_ports is
// re-opened on a port in the range and reported as rebound, from the port
// it was saved on.
func TestRestoreRebindsOutsideRange(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0", true)
	const first, last = 20000, 20100
	saved := []state.Session{{
		ID: uuid.New(), Client: idA, UpstreamLocal: netip.MustParseAddrPort("127.0.0.1:19999"),
		Upstream: up.addr(), UpstreamConfig: up.addr().String(), Created: time.Now(),
	}}
	log := zaptest.NewLogger(t)
	system := relay.NewSystem(log)
	defer system.Shutdown()
	ev := watchSystem(t, system) // before Start: restoring publishes at once
	cfg := relayConfig(t, up.addr(), func(c *config.Relay) {
		c.UpstreamPorts = config.PortRange{First: first, Last: last}
	}, "127.0.0.1:0")
	r, err := relay.Start(cfg, log, relay.WithSystem(system), relay.WithRestore(saved))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	e := await[*messages.SessionRestored](t, ev)
	if !e.Rebound || e.Wanted != saved[0].UpstreamLocal || !strings.Contains(e.Err, "outside upstream_ports") {
		t.Fatalf("restored as %+v, want rebound from %v because of the range", e, saved[0].UpstreamLocal)
	}
	if p := e.UpstreamLocal.Port(); p < first || p > last {
		t.Fatalf("re-bound on %v, outside %d-%d", e.UpstreamLocal, first, last)
	}
	a := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	a.send(t, wgtest.Transport(idA, 1, 1, 64))
	if got := up.next(t); got.from != e.UpstreamLocal {
		t.Fatalf("the session sends from %v, want %v", got.from, e.UpstreamLocal)
	}
}
