package admin_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/admin"
)

// request sends one request with the given Host and Authorization headers
// (empty: the default / none) and returns the status, headers and body.
func request(t *testing.T, url, host, auth string) (int, http.Header, string) {
	t.Helper()
	c := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
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

// rawGet writes one keep-alive GET /healthz on conn and reads the status
// line of its answer, within deadline.
func rawGet(conn net.Conn, r *bufio.Reader, deadline time.Time) (string, error) {
	conn.SetDeadline(deadline)
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return "", err
	}
	return resp.Status, nil
}

// TestConnectionCap fills the connection cap with idle keep-alive
// connections: a further client waits, unanswered, until one of them
// closes, and is then served.
func TestConnectionCap(t *testing.T) {
	const maxConns = 3
	s, _ := start(t, nil, admin.Options{MaxConns: maxConns})

	var holders []net.Conn
	for i := range maxConns {
		conn, err := net.DialTimeout("tcp", s.Addr(), waitTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// One request each proves the listener took the connection; it then
		// stays open, idle, as a keep-alive client leaves it.
		if status, err := rawGet(conn, bufio.NewReader(conn), time.Now().Add(waitTimeout)); err != nil || status != "200 OK" {
			t.Fatalf("holder %d: %q %v", i, status, err)
		}
		holders = append(holders, conn)
	}

	probe, err := net.DialTimeout("tcp", s.Addr(), waitTimeout)
	if err != nil {
		t.Fatal(err) // the kernel still completes the handshake: it queues
	}
	defer probe.Close()
	pr := bufio.NewReader(probe)
	_, err = rawGet(probe, pr, time.Now().Add(300*time.Millisecond))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a client over the cap of %d was answered (%v); want it to wait", maxConns, err)
	}

	holders[0].Close()
	probe.SetDeadline(time.Now().Add(waitTimeout))
	resp, err := http.ReadResponse(pr, nil)
	if err != nil {
		t.Fatalf("after a connection closed, the waiting client got no answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("waiting client: status %d", resp.StatusCode)
	}
	// The other holders are still served on their connections.
	for i, conn := range holders[1:] {
		if status, err := rawGet(conn, bufio.NewReader(conn), time.Now().Add(waitTimeout)); err != nil || status != "200 OK" {
			t.Errorf("holder %d after the probe: %q %v", i+1, status, err)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		opts admin.Options
		ok   bool
	}{
		{name: "zero", opts: admin.Options{}, ok: true},
		{name: "cap at the default", opts: admin.Options{MaxConns: admin.DefaultMaxConns}, ok: true},
		{name: "cap over the default", opts: admin.Options{MaxConns: admin.DefaultMaxConns + 1}},
		{name: "negative cap", opts: admin.Options{MaxConns: -1}},
		{name: "negative interval", opts: admin.Options{SnapshotInterval: -time.Second}},
		{name: "empty host", opts: admin.Options{AllowedHosts: []string{""}}},
		{name: "token with a space", opts: admin.Options{Token: "a b"}},
		{name: "token", opts: admin.Options{Token: "Zm9v-YmFy_42"}, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, tt.ok)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("error of more than one line: %q", err)
			}
			if !tt.ok {
				if s, err := admin.Start("127.0.0.1:0", nil, tt.opts); err == nil {
					s.Shutdown(context.Background())
					t.Error("Start accepted options Validate refuses")
				}
			}
		})
	}
	if admin.MaxFiles <= admin.DefaultMaxConns {
		t.Errorf("MaxFiles %d does not count the listening socket over %d connections", admin.MaxFiles, admin.DefaultMaxConns)
	}
}

func TestHostHeader(t *testing.T) {
	tests := []struct {
		name    string
		allowed []string
		host    string // "": the listener's own address, as a client sends it
		want    int
	}{
		{name: "own address", host: "", want: 200},
		{name: "own ip without port", host: "127.0.0.1", want: 200},
		{name: "localhost", host: "localhost", want: 200},
		{name: "localhost with port", host: "LocalHost:9090", want: 200},
		{name: "localhost with dot", host: "localhost.:9090", want: 200},
		{name: "ipv6 loopback", host: "[::1]:9090", want: 200},
		{name: "ipv6 loopback without port", host: "[::1]", want: 200},
		{name: "other loopback", host: "127.0.0.2:80", want: 200},
		{name: "rebinding name", host: "attacker.example:9090", want: 421},
		{name: "name ending in localhost", host: "localhost.attacker.example", want: 421},
		{name: "other address", host: "192.0.2.7:9090", want: 421},
		{name: "allowed name", allowed: []string{"relay1.example.net"}, host: "RELAY1.example.net:9090", want: 200},
		{name: "allowed name with port", allowed: []string{"relay1.example.net:9090"}, host: "relay1.example.net", want: 200},
		{name: "other name with allowed list", allowed: []string{"relay1.example.net"}, host: "relay2.example.net", want: 421},
		{name: "any", allowed: []string{"*"}, host: "attacker.example", want: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, base := start(t, nil, admin.Options{AllowedHosts: tt.allowed})
			for _, path := range []string{"/healthz", "/metrics", "/sessions", "/"} {
				status, _, body := request(t, base+path, tt.host, "")
				if status != tt.want {
					t.Errorf("GET %s with Host %q: %d, want %d", path, tt.host, status, tt.want)
				}
				if status == 421 && (strings.Count(body, "\n") != 1 || !strings.Contains(body, "is not served here")) {
					t.Errorf("421 body %q, want one line saying why", body)
				}
			}
		})
	}
}

func TestToken(t *testing.T) {
	const token = "c2VjcmV0LXRva2Vu"
	a := &fakeRelay{name: "a"}
	_, base := start(t, []admin.Relay{a}, admin.Options{Token: token})
	tests := []struct {
		name, path, auth string
		want             int
	}{
		{name: "sessions without token", path: "/sessions", want: 401},
		{name: "sessions with a wrong token", path: "/sessions", auth: "Bearer " + token + "x", want: 401},
		{name: "sessions with a prefix of the token", path: "/sessions", auth: "Bearer " + token[:4], want: 401},
		{name: "sessions with basic auth", path: "/sessions", auth: "Basic " + token, want: 401},
		{name: "sessions with the token", path: "/sessions", auth: "Bearer " + token, want: 200},
		{name: "scheme in lower case", path: "/sessions?relay=a", auth: "bearer " + token, want: 200},
		{name: "metrics stays open", path: "/metrics", want: 200},
		{name: "healthz stays open", path: "/healthz", want: 200},
		{name: "index stays open", path: "/", want: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, body := request(t, base+tt.path, "", tt.auth)
			if status != tt.want {
				t.Fatalf("GET %s (Authorization %q): %d, want %d: %s", tt.path, tt.auth, status, tt.want, body)
			}
			if status == 401 {
				if !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") || !strings.Contains(body, "admin token") {
					t.Errorf("401 without a Bearer challenge or a reason: %v %q", hdr, body)
				}
				if strings.Contains(body, token) {
					t.Error("the 401 body shows the token")
				}
			}
		})
	}
}

func TestReadTokenFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want, err string
	}{
		{name: "token and newline", path: write("ok", "  s3cret-Token_1\n"), want: "s3cret-Token_1"},
		{name: "missing", path: filepath.Join(dir, "nope"), err: "no such file"},
		{name: "empty", path: write("empty", "\n\n"), err: "empty"},
		{name: "two words", path: write("words", "a b\n"), err: "without spaces"},
		{name: "too large", path: write("large", strings.Repeat("x", 5000)), err: "larger than"},
		{name: "fifo", path: fifo, err: "not a regular file"},
		{name: "directory", path: dir, err: "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := admin.ReadTokenFile(tt.path)
			if tt.err == "" {
				if err != nil || got != tt.want {
					t.Errorf("ReadTokenFile = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "\n") {
				t.Errorf("ReadTokenFile error %v, want one line containing %q", err, tt.err)
			}
		})
	}
}
