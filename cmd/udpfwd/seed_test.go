package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// seedTimeout bounds each wait of these tests for the process.
const seedTimeout = 20 * time.Second

// seedUpstream is a loopback UDP socket standing in for the upstream; it
// never answers.
func seedUpstream(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// seedPort returns a loopback address whose port was free a moment ago.
func seedPort(t *testing.T) string {
	t.Helper()
	c := seedUpstream(t)
	addr := c.LocalAddr().String()
	c.Close()
	return addr
}

// seedRun starts the binary with args and stops it (SIGTERM, then a kill)
// when the test ends; it returns the process's stderr.
func seedRun(t *testing.T, args ...string) *lockedBuffer {
	t.Helper()
	cmd := exec.Command(binary, args...)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("udpfwd %v exited with %v; stderr:\n%s", args, err, stderr.String())
			}
		case <-time.After(seedTimeout):
			cmd.Process.Kill()
			t.Errorf("udpfwd %v did not stop on SIGTERM", args)
		}
	})
	return stderr
}

// seedDeliver sends payload from c to the relay at to until up receives it
// (the process may still be starting), and returns where it came from.
func seedDeliver(t *testing.T, c *net.UDPConn, to string, up *net.UDPConn, payload []byte, stderr *lockedBuffer) net.Addr {
	t.Helper()
	dst, err := net.ResolveUDPAddr("udp4", to)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(seedTimeout)
	buf := make([]byte, 2048)
	for time.Now().Before(deadline) {
		if _, err := c.WriteToUDP(payload, dst); err != nil {
			t.Fatal(err)
		}
		up.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, from, err := up.ReadFrom(buf)
		if err == nil && bytes.Equal(buf[:n], payload) {
			return from
		}
	}
	t.Fatalf("nothing reached the upstream through udpfwd at %s; stderr:\n%s", to, stderr.String())
	return nil
}

// waitStderr waits until the process's stderr holds part.
func waitStderr(t *testing.T, stderr *lockedBuffer, part string) {
	t.Helper()
	deadline := time.Now().Add(seedTimeout)
	for !strings.Contains(stderr.String(), part) {
		if time.Now().After(deadline) {
			t.Fatalf("stderr never showed %q:\n%s", part, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The seed's "udpfwd wgcfrelay LISTEN UPSTREAM" is -r, with -d before or
// after the addresses: a WARP handshake goes through, and a client that
// moves is logged at debug level, which only -d shows.
func TestSeedRelayForm(t *testing.T) {
	for _, tt := range []struct {
		name string
		args func(listen, up string) []string
	}{
		{"-d first", func(listen, up string) []string { return []string{"wgcfrelay", "-d", listen, up} }},
		{"-d last", func(listen, up string) []string { return []string{"wgcfrelay", listen, up, "-d"} }},
		{"-d between", func(listen, up string) []string { return []string{"wgcfrelay", listen, "-d", up} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := seedUpstream(t)
			listen := seedPort(t)
			stderr := seedRun(t, tt.args(listen, up.LocalAddr().String())...)
			id := wgproto.ClientID{0x5e, 0xed, 0x01}
			a, b := seedUpstream(t), seedUpstream(t)
			first := seedDeliver(t, a, listen, up, wgtest.Initiation(id, 1), stderr)
			// The same client ID from another port: the same session, the
			// same upstream port, and a debug line saying it moved.
			if again := seedDeliver(t, b, listen, up, wgtest.Initiation(id, 2), stderr); again.String() != first.String() {
				t.Errorf("the client's second address reached the upstream from %v, the first from %v", again, first)
			}
			waitStderr(t, stderr, "DEBUG")
		})
	}
}

// The seed's "udpfwd udpfwd FILE" is -f: any datagram is forwarded by the
// file's rule; -d may come anywhere.
func TestSeedForwardForm(t *testing.T) {
	for _, tt := range []struct {
		name string
		args func(file string) []string
	}{
		{"plain", func(file string) []string { return []string{"udpfwd", file} }},
		{"-d first", func(file string) []string { return []string{"udpfwd", "-d", file} }},
		{"-d last", func(file string) []string { return []string{"udpfwd", file, "-d"} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := seedUpstream(t)
			listen := seedPort(t)
			_, inPort, _ := net.SplitHostPort(listen)
			_, upPort, _ := net.SplitHostPort(up.LocalAddr().String())
			file := filepath.Join(t.TempDir(), "rules")
			rule := fmt.Sprintf("# the seed's format\n127.0.0.1,%s,127.0.0.1,0,127.0.0.1,%s\n", inPort, upPort)
			if err := os.WriteFile(file, []byte(rule), 0o600); err != nil {
				t.Fatal(err)
			}
			stderr := seedRun(t, tt.args(file)...)
			seedDeliver(t, seedUpstream(t), listen, up, []byte("not WireGuard at all"), stderr)
			waitStderr(t, stderr, "forward started")
		})
	}
}

// The seed's forms refuse what they cannot mean, in one line, exit 2.
func TestSeedFormsRefuse(t *testing.T) {
	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{[]string{"wgcfrelay"}, "wgcfrelay needs LISTEN and UPSTREAM, got 0 argument(s)"},
		{[]string{"wgcfrelay", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}, "wgcfrelay needs LISTEN and UPSTREAM, got 3 argument(s)"},
		{[]string{"udpfwd", "-d"}, "udpfwd needs FILE, got 0 argument(s)"},
		{[]string{"udpfwd", "a", "b"}, "udpfwd needs FILE, got 2 argument(s)"},
		{[]string{"wgcfrelay", "-r", "127.0.0.1:1", "127.0.0.1:2"}, "udpfwd wgcfrelay takes no -r, -f or -c"},
		{[]string{"udpfwd", "-f", "x", "y"}, "udpfwd udpfwd takes no -r, -f or -c"},
		{[]string{"wgcfrelay", "nowhere", "127.0.0.1:2"}, `LISTEN: "nowhere" is not ip:port`},
		{[]string{"udpfwd", "/nonexistent/rules"}, "/nonexistent/rules"},
	} {
		code, _, stderr := udpfwd(t, tt.args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], tt.msg) {
			t.Errorf("udpfwd %q: exit %d, stderr %q; want 2 and one line with %q", tt.args, code, stderr, tt.msg)
		}
	}
	// The usage names the seed's forms.
	if code, stdout, _ := udpfwd(t, "-h"); code != 0 || !strings.Contains(stdout, "udpfwd wgcfrelay LISTEN UPSTREAM") ||
		!strings.Contains(stdout, "udpfwd udpfwd FILE") {
		t.Errorf("-h: exit %d, the usage does not name the seed's forms:\n%s", code, stdout)
	}
}
