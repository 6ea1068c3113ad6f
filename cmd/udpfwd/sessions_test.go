package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/admin"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// cannedReply is what the fake admin listener serves: two sessions with
// values chosen to exercise every unit of the humanised columns.
func cannedReply() admin.SessionsReply {
	t0 := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	return admin.SessionsReply{
		Time: t0,
		Sessions: []admin.SessionRecord{
			{
				Relay: "warp", UUID: "0b1c2d3e-0000-4000-8000-000000000001",
				ClientID: "a81a15", ClientIDBase64: "qBoV",
				ClientAddr: "127.0.0.1:51820", UpstreamLocal: "0.0.0.0:40001", Upstream: "127.0.0.1:2408",
				Created: t0.Add(-245 * time.Second), AgeSeconds: 245,
				IdleClientSeconds: 1.4, IdleUpstreamSeconds: 12,
				Datagrams: admin.Directions{FromClient: 1520, ToUpstream: 1520, FromUpstream: 1490, ToClient: 1490},
				Bytes:     admin.Directions{FromClient: 1536, ToUpstream: 1536, FromUpstream: 3 << 20, ToClient: 3 << 20},
			},
			{
				Relay: "warp6", UUID: "0b1c2d3e-0000-4000-8000-000000000002",
				ClientID: "010203", ClientIDBase64: "AQID",
				ClientAddr: "[::1]:60000", UpstreamLocal: "[::]:40002", Upstream: "[::1]:2408",
				Created: t0.Add(-(2*86400 + 3*3600) * time.Second), AgeSeconds: 2*86400 + 3*3600 + 59,
				IdleClientSeconds: 3*3600 + 7*60, IdleUpstreamSeconds: 0,
				Datagrams: admin.Directions{FromClient: 7, FromUpstream: 0},
				Bytes:     admin.Directions{FromClient: 512, FromUpstream: 0},
			},
		},
	}
}

// fakeAdmin serves reply (or status and body, if status is not 200) on a
// loopback port and records the query of the last request.
func fakeAdmin(t *testing.T, status int, body string) (addr string, query func() string) {
	t.Helper()
	queries := make(chan string, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/sessions" || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		queries <- r.URL.RawQuery
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), func() string {
		select {
		case q := <-queries:
			return q
		default:
			return "(no request)"
		}
	}
}

func cannedJSON(t *testing.T, r admin.SessionsReply) string {
	t.Helper()
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

func runSessionsT(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = runSessions(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestSessionsTable(t *testing.T) {
	addr, _ := fakeAdmin(t, 200, cannedJSON(t, cannedReply()))
	code, out, errOut := runSessionsT(t, "--admin", addr)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := [][]string{
		{"RELAY", "CLIENT", "B64", "CLIENT-ADDR", "UPSTREAM-PORT", "AGE", "IDLE-IN", "IDLE-OUT", "PKTS-IN", "PKTS-OUT", "BYTES-IN", "BYTES-OUT"},
		{"warp", "a81a15", "qBoV", "127.0.0.1:51820", "40001", "4m05s", "1s", "12s", "1520", "1490", "1.5KiB", "3.0MiB"},
		{"warp6", "010203", "AQID", "[::1]:60000", "40002", "2d03h", "3h07m", "0s", "7", "0", "512B", "0B"},
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i, line := range lines {
		if got := strings.Fields(line); strings.Join(got, "|") != strings.Join(want[i], "|") {
			t.Errorf("line %d:\n got %q\nwant %q", i, got, want[i])
		}
	}
	// Aligned: every column starts at the same offset on every line.
	for c, h := range want[0] {
		col := strings.Index(lines[0], h)
		for i := 1; i < len(lines); i++ {
			if at := fieldOffset(lines[i], c); at != col {
				t.Errorf("line %d: column %s starts at %d, the header at %d:\n%s", i, h, at, col, out)
			}
		}
	}
}

// fieldOffset is where the n-th space-separated field of line starts.
func fieldOffset(line string, n int) int {
	in := false
	for i, r := range line {
		if r != ' ' && !in {
			if n == 0 {
				return i
			}
			n--
		}
		in = r != ' '
	}
	return -1
}

func TestSessionsJSONPassThrough(t *testing.T) {
	body := cannedJSON(t, cannedReply())
	addr, query := fakeAdmin(t, 200, body)
	code, out, errOut := runSessionsT(t, "--json", "--admin", addr, "--relay", "warp 6")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if out != body {
		t.Errorf("--json changed the body:\n got %s\nwant %s", out, body)
	}
	if q := query(); q != "relay=warp+6" {
		t.Errorf("query %q, want relay=warp+6", q)
	}
}

func TestSessionsEmpty(t *testing.T) {
	addr, query := fakeAdmin(t, 200, `{"time":"2026-03-04T05:06:07Z","sessions":[]}`)
	code, out, _ := runSessionsT(t, "--admin", "http://"+addr+"/")
	if code != 0 || out != "no sessions\n" {
		t.Errorf("exit %d, stdout %q; want 0 and \"no sessions\"", code, out)
	}
	if q := query(); q != "" {
		t.Errorf("query %q without --relay", q)
	}
}

func TestSessionsErrors(t *testing.T) {
	// A loopback port with nothing listening: bind one, note it, close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	partial := cannedReply()
	partial.Errors = []admin.RelayError{{Relay: "stuck", Error: "context deadline exceeded"}}
	partialAddr, _ := fakeAdmin(t, 200, cannedJSON(t, partial))
	unknownAddr, _ := fakeAdmin(t, 404, `{"error":"no relay named \"nope\""}`)
	htmlAddr, _ := fakeAdmin(t, 500, "<html>oops</html>")
	garbageAddr, _ := fakeAdmin(t, 200, "[1,2,3]")

	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string // a substring of the one line on stderr
		stdout string // a substring of stdout
	}{
		{name: "unreachable", args: []string{"--admin", closed}, code: 1, stderr: "cannot reach the admin listener at " + closed + ": connection refused (is udpfwd running with --admin?)"},
		{name: "unknown relay", args: []string{"--admin", unknownAddr, "--relay", "nope"}, code: 1, stderr: `udpfwd sessions: no relay named "nope"`},
		{name: "not udpfwd", args: []string{"--admin", htmlAddr}, code: 1, stderr: "answered 500 Internal Server Error (is " + htmlAddr + " udpfwd's admin listener?)"},
		{name: "not a session list", args: []string{"--admin", garbageAddr}, code: 1, stderr: "not a session list"},
		{name: "a relay did not answer", args: []string{"--admin", partialAddr}, code: 1, stderr: "relay stuck did not list its sessions: context deadline exceeded", stdout: "qBoV"},
		{name: "bad admin address", args: []string{"--admin", "9090"}, code: 2, stderr: `--admin: "9090" is not ip:port`},
		{name: "bad admin scheme", args: []string{"--admin", "ftp://127.0.0.1:9090"}, code: 2, stderr: "--admin"},
		{name: "unknown flag", args: []string{"--bogus"}, code: 2, stderr: "flag provided but not defined: --bogus (see udpfwd sessions -h)"},
		{name: "stray argument", args: []string{"warp"}, code: 2, stderr: `unexpected argument "warp"`},
		{name: "help", args: []string{"-h"}, code: 0, stdout: "--admin ip:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runSessionsT(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.code, errOut)
			}
			if tt.stderr != "" && (!strings.Contains(errOut, tt.stderr) || strings.Count(errOut, "\n") != 1) {
				t.Errorf("stderr %q, want one line containing %q", errOut, tt.stderr)
			}
			if tt.stderr == "" && errOut != "" {
				t.Errorf("stderr %q, want none", errOut)
			}
			if !strings.Contains(out, tt.stdout) {
				t.Errorf("stdout %q lacks %q", out, tt.stdout)
			}
		})
	}
}

func TestHumanBytes(t *testing.T) {
	tests := []struct {
		name string
		n    uint64
		want string
	}{
		{"zero", 0, "0B"},
		{"bytes", 1023, "1023B"},
		{"one KiB", 1024, "1.0KiB"},
		{"KiB", 1536, "1.5KiB"},
		{"MiB", 20 << 20, "20.0MiB"},
		{"GiB", 5 << 30, "5.0GiB"},
		{"max", ^uint64(0), "16.0EiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := humanBytes(tt.n); got != tt.want {
				t.Errorf("humanBytes(%d) = %q, want %q", tt.n, got, tt.want)
			}
		})
	}
}

func TestHumanDuration(t *testing.T) {
	tests := []struct {
		name string
		s    float64
		want string
	}{
		{"negative", -3, "0s"},
		{"under a second", 0.9, "0s"},
		{"seconds", 59.9, "59s"},
		{"minutes", 245, "4m05s"},
		{"hours", 3*3600 + 7*60 + 30, "3h07m"},
		{"days", 2*86400 + 3*3600 + 59, "2d03h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := humanDuration(tt.s); got != tt.want {
				t.Errorf("humanDuration(%v) = %q, want %q", tt.s, got, tt.want)
			}
		})
	}
}

// TestSessionsLive runs a relay with the admin listener, opens a session
// through it from a loopback client, and reads it with `udpfwd sessions`.
func TestSessionsLive(t *testing.T) {
	up, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	sessionPort := make(chan netip.AddrPort, 1)
	echoed := make(chan struct{})
	defer func() { up.Close(); <-echoed }()
	go func() { // an upstream that echoes, and tells which port the session used
		defer close(echoed)
		buf := make([]byte, 2048)
		for {
			n, from, err := up.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			select {
			case sessionPort <- from:
			default:
			}
			up.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	cfg := &config.File{Relays: []config.Relay{{Name: "warp", Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		Upstream: config.HostPortFrom(up.LocalAddr().(*net.UDPAddr).AddrPort())}}}
	if _, err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r, err := relay.Start(cfg.Relays[0], zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	srv, err := admin.Start("127.0.0.1:0", []admin.Relay{r}, admin.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		srv.Shutdown(ctx)
	}()

	cl, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	id := wgproto.ClientID{0xa8, 0x1a, 0x15}
	if _, err := cl.WriteToUDPAddrPort(wgtest.Initiation(id, 1), r.ListenAddrs()[0]); err != nil {
		t.Fatal(err)
	}
	cl.SetReadDeadline(time.Now().Add(waitTimeout))
	if _, _, err := cl.ReadFromUDPAddrPort(make([]byte, 2048)); err != nil {
		t.Fatalf("no reply through the relay: %v", err)
	}
	port := (<-sessionPort).Port()

	code, out, errOut := runSessionsT(t, "--admin", srv.Addr(), "--relay", "warp")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want a header and one session:\n%s", out)
	}
	f := strings.Fields(lines[1])
	clientAddr := cl.LocalAddr().String()
	if f[0] != "warp" || f[1] != "a81a15" || f[2] != "qBoV" || f[3] != clientAddr || f[4] != strconv.Itoa(int(port)) || f[8] != "1" || f[9] != "1" || f[10] != "148B" {
		t.Errorf("row %q, want warp a81a15 qBoV %s %d ... 1 1 148B", f, clientAddr, port)
	}
	t.Logf("udpfwd sessions:\n%s", out)
}

// TestSessionsPagesAndToken: `udpfwd sessions` follows "next" to the last
// page, sends the token on every request, and reports a failing relay once.
func TestSessionsPagesAndToken(t *testing.T) {
	const token = "dG9rZW4tZm9yLXRlc3Rz"
	canned := cannedReply()
	pages := map[string]admin.SessionsReply{
		"": {Time: canned.Time, Sessions: canned.Sessions[:1], Next: "?limit=1&after=" + url.QueryEscape(canned.Sessions[0].Key()),
			Errors: []admin.RelayError{{Relay: "stuck", Error: "context deadline exceeded"}}},
		canned.Sessions[0].Key(): {Time: canned.Time, Sessions: canned.Sessions[1:],
			Errors: []admin.RelayError{{Relay: "stuck", Error: "context deadline exceeded"}}},
	}
	var mu sync.Mutex
	var auths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		page, ok := pages[r.URL.Query().Get("after")]
		if r.URL.Path != "/sessions" || !ok {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(page)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := runSessionsT(t, "--admin", srv.URL, "--admin-token-file", tokenFile)
	if code != 1 {
		t.Errorf("exit %d with a failing relay, want 1", code)
	}
	if strings.Count(errOut, "relay stuck did not list its sessions") != 1 || strings.Count(errOut, "\n") != 1 {
		t.Errorf("stderr %q, want the failing relay once", errOut)
	}
	if !strings.Contains(out, "a81a15") || !strings.Contains(out, "010203") {
		t.Errorf("the table lacks a page's session:\n%s", out)
	}
	mu.Lock()
	if len(auths) != 2 || auths[0] != "Bearer "+token || auths[1] != auths[0] {
		t.Errorf("Authorization per request %q, want the bearer token on both pages", auths)
	}
	mu.Unlock()

	// --json: one document with every page's sessions and no "next".
	code, out, _ = runSessionsT(t, "--json", "--admin", srv.URL, "--admin-token-file", tokenFile)
	var merged admin.SessionsReply
	if err := json.Unmarshal([]byte(out), &merged); err != nil || code != 1 {
		t.Fatalf("--json: exit %d, %v:\n%s", code, err, out)
	}
	if len(merged.Sessions) != 2 || merged.Next != "" || len(merged.Errors) != 1 {
		t.Errorf("--json: %d sessions, next %q, %d errors; want 2, none, 1", len(merged.Sessions), merged.Next, len(merged.Errors))
	}

	// A token file that cannot be read is a usage error, before any request.
	code, _, errOut = runSessionsT(t, "--admin", srv.URL, "--admin-token-file", filepath.Join(dir, "missing"))
	if code != 2 || !strings.Contains(errOut, "admin token file") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("missing token file: exit %d, stderr %q; want 2 and one line", code, errOut)
	}
}

// TestSessionsTokenAgainstListener runs the real admin listener with a
// token: without the file the answer says what is missing; with it the
// sessions are listed. A v4-mapped client address shows as IPv4.
func TestSessionsTokenAgainstListener(t *testing.T) {
	const token = "bGlzdGVuZXItdG9rZW4"
	s := admin.Session{
		Client:        wgproto.ClientID{0xa8, 0x1a, 0x15},
		ClientAddr:    netip.MustParseAddrPort("[::ffff:127.0.0.1]:51820"),
		UpstreamLocal: netip.MustParseAddrPort("127.0.0.1:40001"),
		Upstream:      netip.MustParseAddrPort("127.0.0.1:2408"),
	}
	r := &staticRelay{name: "warp", sessions: []admin.Session{s}}
	srv, err := admin.Start("127.0.0.1:0", []admin.Relay{r}, admin.Options{Token: token, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		srv.Shutdown(ctx)
	})
	code, _, errOut := runSessionsT(t, "--admin", srv.Addr())
	if code != 1 || !strings.Contains(errOut, "--admin-token-file") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("without the token: exit %d, stderr %q; want 1 and one line naming --admin-token-file", code, errOut)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runSessionsT(t, "--admin", srv.Addr(), "--admin-token-file", tokenFile)
	if code != 0 || errOut != "" {
		t.Fatalf("with the token: exit %d, stderr %q", code, errOut)
	}
	if !strings.Contains(out, " 127.0.0.1:51820 ") || strings.Contains(out, "::ffff:") {
		t.Errorf("the client address is not shown as IPv4:\n%s", out)
	}
}

// staticRelay is an admin.Relay with fixed sessions.
type staticRelay struct {
	name     string
	counters stats.Counters
	sessions []admin.Session
}

func (s *staticRelay) Name() string              { return s.name }
func (s *staticRelay) Counters() *stats.Counters { return &s.counters }
func (s *staticRelay) AdminSessions(context.Context) ([]admin.Session, error) {
	return s.sessions, nil
}
