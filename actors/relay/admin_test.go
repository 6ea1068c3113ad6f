package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/udpfwd/udpfwd/internal/admin"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// TestAdminListener runs a relay behind the admin listener and reads a live
// session from /sessions and its counters from /metrics.
func TestAdminListener(t *testing.T) {
	id := wgproto.ClientID{0xa8, 0x1a, 0x15}
	up := newUpstream(t, "127.0.0.1:0", true)
	r := startRelay(t, "127.0.0.1:0", up.addr(), 0)
	c := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	c.send(t, wgtest.Initiation(id, 1))
	c.mustRecv(t)
	c.send(t, wgtest.Transport(id, 1, 1, 64))
	c.mustRecv(t)
	sessionPort := up.next(t).from

	s, err := admin.Start("127.0.0.1:0", []admin.Relay{r}, admin.Options{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	hc := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	fetch := func(path string) string {
		t.Helper()
		resp, err := hc.Get("http://" + s.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
		}
		return string(b)
	}

	var reply admin.SessionsReply
	if err := json.Unmarshal([]byte(fetch("/sessions")), &reply); err != nil {
		t.Fatal(err)
	}
	if len(reply.Sessions) != 1 || len(reply.Errors) != 0 {
		t.Fatalf("/sessions: %+v, want one session and no error", reply)
	}
	got := reply.Sessions[0]
	switch {
	case got.Relay != r.Name():
		t.Errorf("relay %q, want %q", got.Relay, r.Name())
	case got.ClientID != "a81a15" || got.ClientIDBase64 != "qBoV":
		t.Errorf("client ID %s / %s, want a81a15 / qBoV", got.ClientID, got.ClientIDBase64)
	case got.ClientAddr != c.addr().String():
		t.Errorf("client address %s, want %s", got.ClientAddr, c.addr())
	case got.UpstreamLocal != sessionPort.String():
		t.Errorf("upstream local %s, but the upstream saw %s", got.UpstreamLocal, sessionPort)
	case got.Upstream != up.addr().String():
		t.Errorf("upstream %s, want %s", got.Upstream, up.addr())
	case got.Datagrams.FromClient != 2 || got.Datagrams.FromUpstream != 2 || got.Bytes.FromClient != 148+64:
		t.Errorf("datagrams %+v bytes %+v, want 2 each way and %d bytes from the client", got.Datagrams, got.Bytes, 148+64)
	case len(got.UUID) != 36:
		t.Errorf("uuid %q", got.UUID)
	}

	m := fetch("/metrics")
	for _, line := range []string{
		`udpfwd_sessions{relay="default"} 1`,
		`udpfwd_sessions_opened_total{relay="default"} 1`,
		`udpfwd_datagrams_total{direction="from_client",relay="default"} 2`,
	} {
		if !strings.Contains(m, "\n"+line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}

func TestAdminSessionsCancelled(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0", false)
	r := startRelay(t, "127.0.0.1:0", up.addr(), 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.AdminSessions(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("AdminSessions with a cancelled context: %v", err)
	}
	ss, err := r.AdminSessions(context.Background())
	if err != nil || len(ss) != 0 {
		t.Errorf("AdminSessions of an idle relay: %v, %v; want none", ss, err)
	}
}
