package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/admin"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// echoUpstream echoes every datagram and remembers, by client ID, the
// source addresses each client's datagrams came from.
type echoUpstream struct {
	conn *net.UDPConn
	mu   sync.Mutex
	from map[wgproto.ClientID]map[netip.AddrPort]bool
}

func newEchoUpstream(t *testing.T) *echoUpstream {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	u := &echoUpstream{conn: c, from: map[wgproto.ClientID]map[netip.AddrPort]bool{}}
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

func (u *echoUpstream) sources(id wgproto.ClientID) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.from[id])
}

// exchange sends msg on c and waits, within 5 s, for it to come back.
func exchange(c *net.UDPConn, msg []byte) error {
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("not answered within 5s: %w", err)
		}
		if bytes.Equal(buf[:n], msg) {
			return nil
		}
	}
}

// httpGet fetches url with the Host header host ("" for the URL's) and
// returns the status and body.
func httpGet(t *testing.T, url, host, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := http.Client{Timeout: 5 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

// waitFor waits until the log holds want.
func waitFor(t *testing.T, log *lockedBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(log.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log:\n%s", want, log.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// SIGHUP applies changed settings in place: a client ping-ponging through
// the reload loses nothing and keeps its upstream port, the new listen
// address is bound beside the old one, and the reload is recorded in the
// metrics; a broken file is refused, changes nothing and is recorded too.
func TestReloadInPlaceThroughSIGHUP(t *testing.T) {
	up := newEchoUpstream(t)
	listenA, listenB := freePort(t), freePort(t)
	cfg := filepath.Join(t.TempDir(), "udpfwd.yaml")
	write := func(extra string, listen ...string) {
		t.Helper()
		body := fmt.Sprintf("admin: 127.0.0.1:0\nrelays:\n  - name: a\n    listen: [%s]\n    upstream: %s\n%s",
			`"`+strings.Join(listen, `", "`)+`"`, up.conn.LocalAddr(), extra)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("    idle_timeout: 1m\n", listenA)
	cmd, stderr, done := startDaemon(t, "-c", cfg)
	defer stopDaemon(t, cmd, done)
	adm := adminAddr(t, stderr)

	id := wgproto.ClientID{0xa, 0xb, 0xc}
	c := dial(t, listenA)
	if err := exchange(c, wgtest.Initiation(id, 1)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	failed := make(chan error, 1)
	var pings sync.WaitGroup
	var answered int
	var mu sync.Mutex
	pings.Add(1)
	go func() {
		defer pings.Done()
		for n := uint64(1); ; n++ {
			if err := exchange(c, wgtest.Transport(id, 1, n, 64)); err != nil {
				failed <- err
				return
			}
			mu.Lock()
			answered++
			mu.Unlock()
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return answered }

	write("    idle_timeout: 2m\n    read_buffer: 1MiB\n    security:\n      client_rate:\n        datagrams_per_second: 100000\n", listenA, listenB)
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, stderr, "reloaded")
	after := count()
	deadline := time.Now().Add(5 * time.Second)
	for count() <= after && len(failed) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	pings.Wait()
	select {
	case err := <-failed:
		t.Fatalf("a datagram was lost around the reload: %v", err)
	default:
	}
	log := stderr.String()
	for _, want := range []string{"relay reconfigured in place", `"changed": 1`, `"failed": 0`} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %s:\n%s", want, log)
		}
	}
	if strings.Contains(log, "relay stopped") {
		t.Errorf("the relay was stopped and started again:\n%s", log)
	}
	if n := up.sources(id); n != 1 {
		t.Errorf("the client reached the upstream from %d ports, want one", n)
	}
	// The new address is bound and relays.
	idB := wgproto.ClientID{0xb, 0xb, 0xb}
	if err := exchange(dial(t, listenB), wgtest.Initiation(idB, 1)); err != nil {
		t.Fatalf("the added listen address: %v", err)
	}
	if status, body := httpGet(t, "http://"+adm+"/metrics", "", ""); status != 200 || !strings.Contains(body, "udpfwd_config_reload_success 1\n") {
		t.Errorf("/metrics after the reload: %d, reload success not 1", status)
	}

	// A broken file: refused, recorded, nothing changes.
	os.WriteFile(cfg, []byte("relays:\n  - name: a\n    bogus: 1\n"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, stderr, "config not applied")
	if err := exchange(c, wgtest.Transport(id, 1, 1<<40, 64)); err != nil {
		t.Fatalf("after a refused reload: %v", err)
	}
	if status, body := httpGet(t, "http://"+adm+"/metrics", "", ""); status != 200 || !strings.Contains(body, "udpfwd_config_reload_success 0\n") {
		t.Errorf("/metrics after a refused reload: %d, reload success not 0", status)
	}
}

// A static forward file: every rule is a forward with its origin, logged
// as such with no client, listed apart by /sessions and udpfwd sessions.
func TestForwardRulesThroughProcess(t *testing.T) {
	up := newEchoUpstream(t)
	p1, p2 := freePort(t), freePort(t)
	port := func(a string) string { return a[strings.LastIndexByte(a, ':')+1:] }
	upPort := port(up.conn.LocalAddr().String())
	rules := writeFile(t, fmt.Sprintf("# two rules on one line\n127.0.0.1,%s,127.0.0.1,0,127.0.0.1,%s; 127.0.0.1,%s,127.0.0.1,0,127.0.0.1,%s\n",
		port(p1), upPort, port(p2), upPort))
	cmd := exec.Command(binary, "-f", rules, "--admin", "127.0.0.1:0")
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	defer stopDaemon(t, cmd, done)
	adm := adminAddr(t, stderr)
	for _, rule := range []string{rules + ":2:1", rules + ":2:2"} {
		waitFor(t, stderr, `forward started	{"relay": "line2`)
		if !strings.Contains(stderr.String(), `"rule": "`+rule+`"`) {
			t.Errorf("no forward started line with rule %s:\n%s", rule, stderr.String())
		}
	}
	if err := exchange(dial(t, p2), []byte("plain UDP")); err != nil {
		t.Fatal(err)
	}
	log := stderr.String()
	for _, bad := range []string{"session opened", "client_addr", "000000"} {
		if strings.Contains(log, bad) {
			t.Errorf("the log shows %q for a forward:\n%s", bad, log)
		}
	}

	status, body := httpGet(t, "http://"+adm+"/sessions", "", "")
	var reply admin.SessionsReply
	if err := json.Unmarshal([]byte(body), &reply); status != 200 || err != nil {
		t.Fatalf("/sessions: %d %v\n%s", status, err, body)
	}
	if len(reply.Sessions) != 0 || len(reply.Forwards) != 2 || reply.Forwards[1].Relay != "line2-2" ||
		reply.Forwards[1].Rule != rules+":2:2" || reply.Forwards[1].Datagrams.FromClient != 1 || reply.Forwards[1].ClientAddr == "" {
		t.Errorf("/sessions: sessions %+v, forwards %+v", reply.Sessions, reply.Forwards)
	}
	code, out, errOut := udpfwd(t, "sessions", "--admin", adm)
	if code != 0 || !strings.HasPrefix(out, "FORWARD ") || !strings.Contains(out, "line2-2") || strings.Contains(out, "RELAY ") || !strings.Contains(out, "LAST-CLIENT") {
		t.Errorf("udpfwd sessions: exit %d, stdout:\n%s\nstderr: %s", code, out, errOut)
	}
}

// -f refuses, in one line with exit 2, the flags that do not apply to a
// forward; the admin flags are checked as the file's keys are.
func TestFlagsThatDoNotApply(t *testing.T) {
	rules := writeFile(t, "127.0.0.1,"+strings.Split(freePort(t), ":")[1]+",127.0.0.1,0,127.0.0.1,9\n")
	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{[]string{"-f", rules, "--idle-timeout", "1m"}, "--idle-timeout: not used in forward mode (-f): a forward relay has no sessions to expire"},
		{[]string{"-f", rules, "--allow-client", "qBoV"}, "--allow-client: not used in forward mode (-f)"},
		{[]string{"--max-sessions", "5", "-f", rules}, "--max-sessions: not used in forward mode (-f)"},
		{[]string{"-f", rules, "--state-file", "/var/lib/udpfwd/state.json"}, "--state-file: not used in forward mode (-f): a forward relay has no sessions to keep"},
		{[]string{"-r", "127.0.0.1:0", "127.0.0.1:9", "--admin", "127.0.0.1:0", "--admin-token-file", "/nonexistent/token"}, "admin token file"},
		{[]string{"-r", "127.0.0.1:0", "127.0.0.1:9", "--admin-allow-host", "relay.example:9090"}, "--admin-allow-host: "},
	} {
		code, _, stderr := udpfwd(t, tt.args...)
		if code != 2 || !strings.Contains(stderr, tt.msg) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("udpfwd %v: exit %d, stderr %q; want 2 and one line with %q", tt.args, code, stderr, tt.msg)
		}
	}
}

// The admin token and allowed hosts reach the admin listener; /healthz
// names a relay whose upstream does not resolve.
func TestAdminFlagsThroughProcess(t *testing.T) {
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, stderr, done := startDaemon(t, "-r", "127.0.0.1:0", "upstream.invalid:2408", "--admin", "127.0.0.1:0",
		"--admin-token-file", token, "--admin-allow-host", "relay.example")
	defer stopDaemon(t, cmd, done)
	adm := adminAddr(t, stderr)
	base := "http://" + adm
	if status, _ := httpGet(t, base+"/sessions", "", ""); status != http.StatusUnauthorized {
		t.Errorf("/sessions without the token: %d, want 401", status)
	}
	if status, _ := httpGet(t, base+"/sessions", "", "s3cret-token"); status != http.StatusOK {
		t.Errorf("/sessions with the token: %d, want 200", status)
	}
	if status, _ := httpGet(t, base+"/metrics", "relay.example:9090", ""); status != http.StatusOK {
		t.Errorf("an allowed Host: %d, want 200", status)
	}
	if status, _ := httpGet(t, base+"/metrics", "attacker.example", ""); status != http.StatusMisdirectedRequest {
		t.Errorf("a foreign Host: %d, want 421", status)
	}
	status, body := httpGet(t, base+"/healthz", "", "")
	if want := "unhealthy: relay default: upstream upstream.invalid:2408 has no address\n"; status != http.StatusServiceUnavailable || body != want {
		t.Errorf("/healthz: %d %q, want 503 %q", status, body, want)
	}
}

// A token file that cannot be read is refused by check and by a reload,
// which then keeps the running token; a new token takes effect with a
// reload.
func TestTokenFileOnReload(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("first-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "udpfwd.yaml")
	if err := os.WriteFile(cfg, []byte("admin: 127.0.0.1:0\nadmin_token_file: "+token+
		"\nrelays:\n  - name: a\n    listen: 127.0.0.1:0\n    upstream: 127.0.0.1:9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, stderr, done := startDaemon(t, "-c", cfg)
	defer stopDaemon(t, cmd, done)
	base := "http://" + adminAddr(t, stderr)
	if status, _ := httpGet(t, base+"/sessions", "", "first-token"); status != http.StatusOK {
		t.Fatalf("/sessions with the token: %d", status)
	}

	os.Remove(token)
	if code, _, errOut := udpfwd(t, "check", "-q", "-c", cfg); code != 2 || !strings.Contains(errOut, "admin token file") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("check with a missing token file: exit %d, stderr %q; want 2 and one line", code, errOut)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, stderr, "config not applied")
	if !strings.Contains(stderr.String(), "admin token file") {
		t.Errorf("the refusal does not name the token file:\n%s", stderr.String())
	}
	if status, _ := httpGet(t, base+"/sessions", "", "first-token"); status != http.StatusOK {
		t.Errorf("after the refused reload the running token: %d, want 200", status)
	}

	if err := os.WriteFile(token, []byte("second-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, stderr, "reloaded")
	base = "http://" + adminAddrAfter(t, stderr, 2)
	if status, _ := httpGet(t, base+"/sessions", "", "second-token"); status != http.StatusOK {
		t.Errorf("the new token after the reload: %d, want 200", status)
	}
	if status, _ := httpGet(t, base+"/sessions", "", "first-token"); status != http.StatusUnauthorized {
		t.Errorf("the old token after the reload: %d, want 401", status)
	}
}

// adminAddrAfter returns the address of the n-th "admin listener started"
// line (a reload that changes the admin settings starts it anew, on a new
// port for port 0).
func adminAddrAfter(t *testing.T, stderr *lockedBuffer, n int) string {
	t.Helper()
	re := regexp.MustCompile(`admin listener started\s+\{"addr": "([^"]+)"\}`)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if m := re.FindAllStringSubmatch(stderr.String(), -1); len(m) >= n {
			return m[n-1][1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %d admin listener addresses in:\n%s", n, stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
