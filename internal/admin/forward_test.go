package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/admin"
	"github.com/udpfwd/udpfwd/internal/stats"
)

// forwardRelay is a relay of static forward mode: no sessions, one
// forward.
type forwardRelay struct {
	fakeRelay
	fwd admin.Forward
}

func (f *forwardRelay) AdminForward(context.Context) (*admin.Forward, error) { return &f.fwd, nil }

// /sessions lists static forwards apart, on the first page, and never as
// sessions.
func TestSessionsListsForwards(t *testing.T) {
	fwd := &forwardRelay{fakeRelay: fakeRelay{name: "line4-2"}, fwd: admin.Forward{
		Rule:          "rules:4:2",
		Listen:        netip.MustParseAddrPort("[::ffff:127.0.0.1]:5353"),
		ClientAddr:    netip.MustParseAddrPort("[::ffff:127.0.0.1]:40000"),
		UpstreamLocal: netip.MustParseAddrPort("127.0.0.1:41000"),
		Upstream:      netip.MustParseAddrPort("192.0.2.53:53"),
		Stats: stats.SessionSnapshot{
			Created: t0.Add(-time.Minute), LastClient: t0.Add(-time.Second), LastUpstream: t0.Add(-2 * time.Second),
			Datagrams: [stats.NumDirections]uint64{5, 5, 4, 4},
		},
	}}
	idle := &forwardRelay{fakeRelay: fakeRelay{name: "line5"}, fwd: admin.Forward{
		Listen: netip.MustParseAddrPort("127.0.0.1:5354"), Stats: stats.SessionSnapshot{Created: t0, LastClient: t0, LastUpstream: t0},
	}}
	warp := &fakeRelay{name: "warp", sessions: []admin.Session{
		session(1, idA, "127.0.0.1:5000", 40001, 1), session(2, idB, "127.0.0.1:5001", 40002, 1),
	}}
	_, base := start(t, []admin.Relay{warp, idle, fwd}, admin.Options{})

	status, _, body := get(t, "GET", base+"/sessions?limit=1")
	var page admin.SessionsReply
	if err := json.Unmarshal([]byte(body), &page); status != 200 || err != nil {
		t.Fatalf("/sessions: %d %v\n%s", status, err, body)
	}
	if len(page.Sessions) != 1 || page.Sessions[0].Relay != "warp" || page.Next == "" {
		t.Fatalf("first page: sessions %+v, next %q; want one of warp's and a next page", page.Sessions, page.Next)
	}
	if len(page.Forwards) != 2 {
		t.Fatalf("forwards %+v; want line4-2 and line5", page.Forwards)
	}
	got := page.Forwards[0]
	want := admin.ForwardRecord{
		Relay: "line4-2", Rule: "rules:4:2", Listen: "127.0.0.1:5353", ClientAddr: "127.0.0.1:40000",
		UpstreamLocal: "127.0.0.1:41000", Upstream: "192.0.2.53:53",
		Created: t0.Add(-time.Minute), AgeSeconds: 60, LastFromClient: t0.Add(-time.Second), IdleClientSeconds: 1,
		LastFromUpstream: t0.Add(-2 * time.Second), IdleUpstreamSeconds: 2,
		Datagrams: admin.Directions{FromClient: 5, ToUpstream: 5, FromUpstream: 4, ToClient: 4},
	}
	if got != want {
		t.Errorf("forward\n got %+v\nwant %+v", got, want)
	}
	if page.Forwards[1].Relay != "line5" || page.Forwards[1].ClientAddr != "" {
		t.Errorf("a forward that heard no client: %+v; want an empty client_addr", page.Forwards[1])
	}

	status, _, body = get(t, "GET", base+"/sessions"+page.Next)
	var next admin.SessionsReply
	if err := json.Unmarshal([]byte(body), &next); status != 200 || err != nil {
		t.Fatalf("next page: %d %v\n%s", status, err, body)
	}
	if len(next.Sessions) != 1 || len(next.Forwards) != 0 {
		t.Errorf("next page: %d sessions, forwards %+v; want the other session and no forward again", len(next.Sessions), next.Forwards)
	}
}

// /healthz says one line per failing relay.
func TestHealthzLinePerRelay(t *testing.T) {
	_, base := start(t, nil, admin.Options{Healthy: func() error {
		return errors.Join(errors.New("relay a: upstream x.example:2408 has no address"), errors.New("relay b: at its session cap (10 of 10)"))
	}})
	status, _, body := get(t, "GET", base+"/healthz")
	want := "unhealthy: relay a: upstream x.example:2408 has no address\nunhealthy: relay b: at its session cap (10 of 10)\n"
	if status != 503 || body != want {
		t.Fatalf("/healthz = %d %q, want 503 %q", status, body, want)
	}
}
