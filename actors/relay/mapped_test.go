package relay_test

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/roam"
	"github.com/udpfwd/udpfwd/internal/state"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// An IPv4 client of a dual-stack listener ("[::]") is an IPv4 address
// everywhere the relay shows or keeps it: its lifecycle events, the session
// list and the state file, never the IPv4-mapped IPv6 form.
func TestDualStackClientIsIPv4(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0", true)
	r := startRelay(t, "[::]:0", up.addr(), 0)
	ev := watchEvents(t, r)
	c := newClient(t, "127.0.0.1:0", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), r.ListenAddrs()[0].Port()))
	c.send(t, wgtest.Initiation(idA, 1))
	c.mustRecv(t)

	if o := await[*messages.SessionOpened](t, ev); o.ClientAddr != c.addr() {
		t.Errorf("SessionOpened client address %v, want %v", o.ClientAddr, c.addr())
	}
	l, err := r.Sessions(waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Sessions) != 1 || l.Sessions[0].ClientAddr != c.addr() {
		t.Fatalf("sessions %+v, want one with client address %v", l.Sessions, c.addr())
	}
	saved, err := r.Snapshot(waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if len(saved) != 1 || saved[0].ClientAddr != c.addr() {
		t.Fatalf("saved %+v, want client address %v", saved, c.addr())
	}
	var st roam.State
	if err := json.Unmarshal(saved[0].Roam, &st); err != nil || st.Addr != c.addr() {
		t.Fatalf("saved roaming state %s (%v), want address %v", saved[0].Roam, err, c.addr())
	}
}

// A state file written before addresses were unmapped holds an IPv4 client
// of a dual-stack listener in its IPv4-mapped form. The restored session
// still knows its client: the client's next transport message is its own
// (no roam, nothing dropped as unconfirmed) and the replies reach it.
func TestRestoreMappedClientAddress(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0", true)
	c := newClient(t, "127.0.0.1:0", netip.AddrPort{})
	mapped := netip.AddrPortFrom(netip.AddrFrom16(c.addr().Addr().As16()), c.addr().Port())
	if !mapped.Addr().Is4In6() {
		t.Fatalf("%v is not IPv4-mapped", mapped)
	}
	roamState, err := json.Marshal(roam.State{Addr: mapped, Answered: true,
		Indexes: []roam.LearnedIndex{{Index: 7, Learned: time.Now()}}})
	if err != nil {
		t.Fatal(err)
	}
	saved := []state.Session{{
		ID: uuid.New(), Client: idA, ClientAddr: mapped, UpstreamLocal: netip.MustParseAddrPort("127.0.0.1:0"),
		Upstream: up.addr(), UpstreamConfig: up.addr().String(), Created: time.Now(), Roam: roamState,
	}}
	log := zaptest.NewLogger(t)
	system := relay.NewSystem(log)
	defer system.Shutdown()
	ev := watchSystem(t, system)
	r, err := relay.Start(relayConfig(t, up.addr(), nil, "[::]:0"), log, relay.WithSystem(system), relay.WithRestore(saved))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if e := await[*messages.SessionRestored](t, ev); e.ClientAddr != c.addr() {
		t.Errorf("restored with client address %v, want %v", e.ClientAddr, c.addr())
	}
	c.to = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), r.ListenAddrs()[0].Port())
	d := wgtest.Transport(idA, 7, 1, 64)
	c.send(t, d)
	if got := c.mustRecv(t); string(got) != string(d) {
		t.Fatalf("echo %x, want %x", got, d)
	}
	if n := count[*messages.ClientRoamed](ev); n != 0 {
		t.Errorf("%d roams: the restored session did not know its own client", n)
	}
}
