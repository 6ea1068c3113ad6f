package session

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/cluster"
)

// TestWayBack: the listener index a forwarded client's replies go by: this
// node's listener on the shared address in owner mode, else a virtual index
// per ingress node (and listening address), at most maxIngress of them,
// the oldest replaced first; 255 never names one.
func TestWayBack(t *testing.T) {
	shared := netip.MustParseAddrPort("203.0.113.1:2408")
	other := netip.MustParseAddrPort("203.0.113.1:500")
	replier := func(node int) *actor.PID { return actor.NewPID(fmt.Sprintf("10.0.0.%d:7000", node), "$1") }
	local := actor.NewPID("nonhost", "writer")
	for _, tc := range []struct {
		name  string
		owner bool
		steps []struct {
			listen netip.AddrPort
			node   int
			want   uint8
		}
	}{
		{"owner", true, []struct {
			listen netip.AddrPort
			node   int
			want   uint8
		}{{shared, 2, 0}, {other, 2, RemoteListenerBase}, {shared, 3, 0}, {other, 3, RemoteListenerBase + 1}, {other, 2, RemoteListenerBase}}},
		{"ingress", false, []struct {
			listen netip.AddrPort
			node   int
			want   uint8
		}{{shared, 2, RemoteListenerBase}, {shared, 3, RemoteListenerBase + 1}, {shared, 2, RemoteListenerBase}, {other, 2, RemoteListenerBase + 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Session{cfg: Config{Writers: []*actor.PID{local}, Cluster: &Cluster{Owner: tc.owner, Listens: []netip.AddrPort{shared}}}}
			for i, st := range tc.steps {
				got, ok := s.wayBack(&cluster.RemoteDatagrams{Listen: st.listen, ReplyTo: replier(st.node)})
				if !ok || got != st.want || !s.canReply(got) {
					t.Fatalf("step %d (%v via node %d): listener %d ok %v (can reply %v), want %d", i, st.listen, st.node, got, ok, s.canReply(got), st.want)
				}
			}
		})
	}

	s := &Session{cfg: Config{Writers: []*actor.PID{local}, Cluster: &Cluster{Listens: []netip.AddrPort{shared}}}}
	for node := range maxIngress + 1 {
		got, _ := s.wayBack(&cluster.RemoteDatagrams{Listen: shared, ReplyTo: replier(node + 2)})
		if want := uint8(RemoteListenerBase + node%maxIngress); got != want {
			t.Fatalf("ingress node %d: listener %d, want %d", node, got, want)
		}
	}
	if s.canReply(255) {
		t.Fatal("listener 255, a restored state's none, names a way back")
	}
	if _, ok := s.wayBack(&cluster.RemoteDatagrams{Listen: other}); ok {
		t.Fatal("a forwarded batch with no way back and no local listener was given one")
	}
}
