package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/udpfwd/udpfwd/internal/admin"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every request in these tests.
//
// Generous: it only costs time when a test fails, and a -race run on two
// busy cores can be slow by seconds.
const waitTimeout = 30 * time.Second

// fakeRelay implements admin.Relay with canned sessions.
type fakeRelay struct {
	name     string
	counters stats.Counters
	sessions []admin.Session
	err      error
	hang     bool // wait for the context to end, as a stuck relay would
}

func (f *fakeRelay) Name() string              { return f.name }
func (f *fakeRelay) Counters() *stats.Counters { return &f.counters }
func (f *fakeRelay) AdminSessions(ctx context.Context) ([]admin.Session, error) {
	if f.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return f.sessions, f.err
}

// t0 is the fake clock's "now" for /sessions.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func session(id byte, client wgproto.ClientID, clientAddr string, upPort uint16, n uint64) admin.Session {
	s := admin.Session{
		ID:            uuid.UUID{id, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
		Client:        client,
		ClientAddr:    netip.MustParseAddrPort(clientAddr),
		UpstreamLocal: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), upPort),
		Upstream:      netip.MustParseAddrPort("127.0.0.1:2408"),
		Stats: stats.SessionSnapshot{
			Created:      t0.Add(-90 * time.Second),
			LastClient:   t0.Add(-1500 * time.Millisecond),
			LastUpstream: t0.Add(-2 * time.Second),
			ClientAddr:   netip.MustParseAddrPort(clientAddr),
		},
	}
	for d := range stats.NumDirections {
		s.Stats.Datagrams[d] = n + uint64(d)
		s.Stats.Bytes[d] = 100*n + uint64(d)
	}
	return s
}

var (
	idA = wgproto.ClientID{0xa8, 0x1a, 0x15} // qBoV
	idB = wgproto.ClientID{0x01, 0x02, 0x03} // AQID
)

// start runs an admin listener on a free loopback port, shut down at the
// end of the test.
func start(t *testing.T, relays []admin.Relay, opts admin.Options) (*admin.Server, string) {
	t.Helper()
	if opts.Now == nil {
		opts.Now = func() time.Time { return t0 }
	}
	opts.Logger = zaptest.NewLogger(t)
	s, err := admin.Start("127.0.0.1:0", relays, opts)
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
	return s, "http://" + s.Addr()
}

// get sends one request and returns the status and body.
func get(t *testing.T, method, url string) (int, http.Header, string) {
	t.Helper()
	c := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func TestRoutes(t *testing.T) {
	_, base := start(t, nil, admin.Options{})
	tests := []struct {
		name, method, path string
		status             int
		body               string // a substring of the body
	}{
		{name: "healthz", method: "GET", path: "/healthz", status: 200, body: "ok\n"},
		{name: "healthz head", method: "HEAD", path: "/healthz", status: 200},
		{name: "metrics", method: "GET", path: "/metrics", status: 200, body: "udpfwd_build_info"},
		{name: "sessions", method: "GET", path: "/sessions", status: 200, body: `"sessions": []`},
		{name: "index", method: "GET", path: "/", status: 200, body: "/sessions"},
		{name: "post refused", method: "POST", path: "/healthz", status: 405},
		{name: "delete refused", method: "DELETE", path: "/sessions", status: 405},
		{name: "unknown path", method: "GET", path: "/debug/pprof/", status: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := get(t, tt.method, base+tt.path)
			if status != tt.status {
				t.Errorf("%s %s: status %d, want %d", tt.method, tt.path, status, tt.status)
			}
			if !strings.Contains(body, tt.body) {
				t.Errorf("%s %s: body %q lacks %q", tt.method, tt.path, body, tt.body)
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	tests := []struct {
		name    string
		healthy func() error
		status  int
		body    string
	}{
		{name: "no check", healthy: nil, status: 200, body: "ok\n"},
		{name: "healthy", healthy: func() error { return nil }, status: 200, body: "ok\n"},
		{name: "relay down", healthy: func() error { return errors.New("relay warp stopped") }, status: 503, body: "unhealthy: relay warp stopped\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, base := start(t, nil, admin.Options{Healthy: tt.healthy})
			status, _, body := get(t, "GET", base+"/healthz")
			if status != tt.status || body != tt.body {
				t.Errorf("/healthz = %d %q, want %d %q", status, body, tt.status, tt.body)
			}
		})
	}
}

func TestMetricsEndpoint(t *testing.T) {
	a := &fakeRelay{name: "a"}
	a.counters.Move(stats.FromClient, 10, 1480)
	a.counters.Drop(stats.ZeroClientID, 4)
	a.counters.SetLive(2)
	b := &fakeRelay{name: "b"}

	// Something in the global registry must not reach /metrics.
	leak := prometheus.NewCounter(prometheus.CounterOpts{Name: "admin_test_global_total", Help: "must not be served"})
	prometheus.MustRegister(leak)
	t.Cleanup(func() { prometheus.Unregister(leak) })

	_, base := start(t, []admin.Relay{a, b}, admin.Options{Version: "v9.9.9"})
	status, hdr, body := get(t, "GET", base+"/metrics")
	if status != 200 {
		t.Fatalf("/metrics: status %d", status)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics Content-Type %q, want the text format", ct)
	}
	for _, line := range []string{
		`udpfwd_datagrams_total{direction="from_client",relay="a"} 10`,
		`udpfwd_bytes_total{direction="from_client",relay="a"} 1480`,
		`udpfwd_dropped_datagrams_total{reason="zero_client_id",relay="a"} 4`,
		`udpfwd_dropped_datagrams_total{reason="zero_client_id",relay="b"} 0`,
		`udpfwd_sessions{relay="a"} 2`,
		`udpfwd_sessions_opened_total{relay="b"} 0`,
		`udpfwd_build_info{version="v9.9.9"} 1`,
		`go_goroutines `,
		`process_open_fds `,
	} {
		if !strings.Contains(body, "\n"+line) {
			t.Errorf("/metrics lacks line %q", line)
		}
	}
	if strings.Contains(body, "admin_test_global_total") {
		t.Error("/metrics serves the global registry's metrics")
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestSessionsJSON(t *testing.T) {
	// Relays and sessions given out of order: the answer is sorted.
	b := &fakeRelay{name: "b", sessions: []admin.Session{session(3, idA, "127.0.0.1:7003", 40003, 30)}}
	a := &fakeRelay{name: "a", sessions: []admin.Session{
		session(2, idA, "[::1]:7002", 40002, 20),
		session(1, idB, "127.0.0.1:7001", 40001, 10),
	}}
	_, base := start(t, []admin.Relay{b, a}, admin.Options{})
	status, hdr, body := get(t, "GET", base+"/sessions")
	if status != 200 {
		t.Fatalf("/sessions: status %d: %s", status, body)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}

	// The shape: these keys, no more, no fewer.
	var raw struct {
		Time     string           `json:"time"`
		Sessions []map[string]any `json:"sessions"`
	}
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Sessions) != 3 {
		t.Fatalf("%d sessions, want 3:\n%s", len(raw.Sessions), body)
	}
	wantKeys := []string{
		"age_seconds", "bytes", "client_addr", "client_id", "client_id_base64", "created", "datagrams",
		"idle_client_seconds", "idle_upstream_seconds", "last_from_client", "last_from_upstream",
		"relay", "upstream", "upstream_local", "uuid",
	}
	if got := slices.Sorted(maps.Keys(raw.Sessions[0])); !slices.Equal(got, wantKeys) {
		t.Errorf("session keys:\n got %v\nwant %v", got, wantKeys)
	}
	if raw.Time != "2026-03-04T05:06:07Z" {
		t.Errorf("time %q, want RFC 3339 of the clock", raw.Time)
	}

	var reply admin.SessionsReply
	if err := json.Unmarshal([]byte(body), &reply); err != nil {
		t.Fatal(err)
	}
	type key struct{ relay, client, addr string }
	var order []key
	for _, s := range reply.Sessions {
		order = append(order, key{s.Relay, s.ClientID, s.ClientAddr})
	}
	wantOrder := []key{{"a", "010203", "127.0.0.1:7001"}, {"a", "a81a15", "[::1]:7002"}, {"b", "a81a15", "127.0.0.1:7003"}}
	if !slices.Equal(order, wantOrder) {
		t.Errorf("order %v, want %v", order, wantOrder)
	}

	got := reply.Sessions[1]
	want := admin.SessionRecord{
		Relay:               "a",
		UUID:                "02010203-0405-0607-0809-0a0b0c0d0e0f",
		ClientID:            "a81a15",
		ClientIDBase64:      "qBoV",
		ClientAddr:          "[::1]:7002",
		UpstreamLocal:       "127.0.0.1:40002",
		Upstream:            "127.0.0.1:2408",
		Created:             t0.Add(-90 * time.Second),
		AgeSeconds:          90,
		LastFromClient:      t0.Add(-1500 * time.Millisecond),
		IdleClientSeconds:   1.5,
		LastFromUpstream:    t0.Add(-2 * time.Second),
		IdleUpstreamSeconds: 2,
		Datagrams:           admin.Directions{FromClient: 20, ToUpstream: 21, FromUpstream: 22, ToClient: 23},
		Bytes:               admin.Directions{FromClient: 2000, ToUpstream: 2001, FromUpstream: 2002, ToClient: 2003},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("session:\n got %+v\nwant %+v", got, want)
	}
	if !strings.Contains(body, `"created": "2026-03-04T05:04:37Z"`) {
		t.Errorf("created is not RFC 3339 UTC:\n%s", body)
	}
	if reply.Errors != nil {
		t.Errorf("errors %v, want none", reply.Errors)
	}
}

// TestDirectionKeys keeps the JSON keys equal to the stats direction names,
// which are also the metrics' direction label values.
func TestDirectionKeys(t *testing.T) {
	b, err := json.Marshal(admin.Directions{FromClient: 1, ToUpstream: 2, FromUpstream: 3, ToClient: 4})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]uint64
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{}
	for d := range stats.NumDirections {
		want[stats.Direction(d).String()] = uint64(d) + 1
	}
	if !maps.Equal(m, want) {
		t.Errorf("Directions JSON %v, want %v", m, want)
	}
}

func TestSessionsFilter(t *testing.T) {
	a := &fakeRelay{name: "a", sessions: []admin.Session{session(1, idA, "127.0.0.1:7001", 40001, 1)}}
	b := &fakeRelay{name: "b", sessions: []admin.Session{session(2, idB, "127.0.0.1:7002", 40002, 1)}}
	_, base := start(t, []admin.Relay{a, b}, admin.Options{})
	tests := []struct {
		name   string
		query  string
		status int
		relays []string
		err    string
	}{
		{name: "all", query: "", status: 200, relays: []string{"a", "b"}},
		{name: "one", query: "?relay=b", status: 200, relays: []string{"b"}},
		{name: "unknown", query: "?relay=c", status: 404, err: `no relay named "c"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := get(t, "GET", base+"/sessions"+tt.query)
			if status != tt.status {
				t.Fatalf("status %d, want %d: %s", status, tt.status, body)
			}
			if tt.err != "" {
				var e admin.ErrorReply
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error != tt.err {
					t.Errorf("error body %q (%v), want error %q", body, err, tt.err)
				}
				return
			}
			var reply admin.SessionsReply
			if err := json.Unmarshal([]byte(body), &reply); err != nil {
				t.Fatal(err)
			}
			var relays []string
			for _, s := range reply.Sessions {
				relays = append(relays, s.Relay)
			}
			if !slices.Equal(relays, tt.relays) {
				t.Errorf("sessions of relays %v, want %v", relays, tt.relays)
			}
		})
	}
}

func TestSessionsRelayFails(t *testing.T) {
	ok := &fakeRelay{name: "ok", sessions: []admin.Session{session(1, idA, "127.0.0.1:7001", 40001, 1)}}
	broken := &fakeRelay{name: "broken", err: errors.New("supervisor gone")}
	stuck := &fakeRelay{name: "stuck", hang: true}
	_, base := start(t, []admin.Relay{ok, broken, stuck}, admin.Options{SessionsTimeout: 100 * time.Millisecond})

	// A stuck relay that held up the answer would make get fail at its
	// client's timeout (waitTimeout).
	status, _, body := get(t, "GET", base+"/sessions")
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	var reply admin.SessionsReply
	if err := json.Unmarshal([]byte(body), &reply); err != nil {
		t.Fatal(err)
	}
	if len(reply.Sessions) != 1 || reply.Sessions[0].Relay != "ok" {
		t.Errorf("sessions %+v, want the one of relay ok", reply.Sessions)
	}
	if len(reply.Errors) != 2 ||
		reply.Errors[0] != (admin.RelayError{Relay: "broken", Error: "supervisor gone"}) ||
		reply.Errors[1].Relay != "stuck" || !strings.Contains(reply.Errors[1].Error, "deadline") {
		t.Errorf("errors %+v, want broken then stuck (deadline)", reply.Errors)
	}
}

func TestSetRelays(t *testing.T) {
	a := &fakeRelay{name: "a", sessions: []admin.Session{session(1, idA, "127.0.0.1:7001", 40001, 1)}}
	s, base := start(t, []admin.Relay{a}, admin.Options{})

	// A reload: relay a removed, relay c added.
	c := &fakeRelay{name: "c", sessions: []admin.Session{session(3, idB, "127.0.0.1:7003", 40003, 1)}}
	if err := s.SetRelays([]admin.Relay{c}); err != nil {
		t.Fatal(err)
	}
	_, _, body := get(t, "GET", base+"/sessions")
	if strings.Contains(body, `"relay": "a"`) || !strings.Contains(body, `"relay": "c"`) {
		t.Errorf("/sessions after SetRelays(c):\n%s", body)
	}
	_, _, metrics := get(t, "GET", base+"/metrics")
	if strings.Contains(metrics, `relay="a"`) || !strings.Contains(metrics, `udpfwd_sessions{relay="c"} 0`) {
		t.Error("/metrics after SetRelays(c) still shows a, or not c")
	}

	// Two relays of one name are refused, and nothing changes.
	if err := s.SetRelays([]admin.Relay{c, &fakeRelay{name: "c"}}); err == nil {
		t.Error("SetRelays accepted two relays named c")
	}
	if err := s.SetRelays([]admin.Relay{nil}); err == nil {
		t.Error("SetRelays accepted a nil relay")
	}
	if _, _, body := get(t, "GET", base+"/sessions"); !strings.Contains(body, `"relay": "c"`) {
		t.Errorf("a refused SetRelays changed the relays:\n%s", body)
	}
}

func TestStartErrors(t *testing.T) {
	s, _ := start(t, nil, admin.Options{})
	taken := s.Addr()

	_, err := admin.Start(taken, nil, admin.Options{})
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), taken) {
		t.Errorf("second Start on %s: %v, want EADDRINUSE naming the address", taken, err)
	}
	if err != nil && strings.Count(err.Error(), taken) != 1 {
		t.Errorf("error names the address more than once: %v", err)
	}

	tests := []struct{ name, addr string }{
		{"empty", ""},
		{"no port", "127.0.0.1"},
		{"port out of range", "127.0.0.1:99999"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := admin.Start(tt.addr, nil, admin.Options{}); err == nil {
				s.Shutdown(context.Background())
				t.Errorf("Start(%q) succeeded", tt.addr)
			}
		})
	}
	dup := []admin.Relay{&fakeRelay{name: "x"}, &fakeRelay{name: "x"}}
	if s, err := admin.Start("127.0.0.1:0", dup, admin.Options{}); err == nil {
		s.Shutdown(context.Background())
		t.Error("Start accepted two relays named x")
	}
}

func TestShutdown(t *testing.T) {
	s, err := admin.Start("127.0.0.1:0", nil, admin.Options{})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.Addr()
	if status, _, _ := get(t, "GET", base+"/healthz"); status != 200 {
		t.Fatalf("before Shutdown: %d", status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: waitTimeout}
	if resp, err := c.Get(base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("the listener answers after Shutdown")
	}
	// The address is free again.
	s2, err := admin.Start(s.Addr(), nil, admin.Options{})
	if err != nil {
		t.Fatalf("address not released by Shutdown: %v", err)
	}
	s2.Shutdown(ctx)
}
