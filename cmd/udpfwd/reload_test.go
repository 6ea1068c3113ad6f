package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// relayConfig writes a config file with the given relays section.
func relayConfig(t *testing.T, path, relays string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("relays:\n"+relays), 0o600); err != nil {
		t.Fatal(err)
	}
}

// upstreamSource reads from up until a datagram of client id arrives and
// returns where it came from.
func upstreamSource(t *testing.T, up *net.UDPConn, id wgproto.ClientID) netip.AddrPort {
	t.Helper()
	buf := make([]byte, 2048)
	up.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, from, err := up.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("upstream: no datagram of client %v: %v", id, err)
		}
		if n >= 4 && wgproto.ClientID(buf[1:4]) == id {
			return from
		}
	}
}

// SIGHUP with a changed config keeps every session: of the unchanged relay
// untouched, of the changed relay on the same upstream port; a removed relay
// stops and an added one starts.
func TestReloadKeepsSessions(t *testing.T) {
	up, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	listenA, listenB, listenC, listenD := freePort(t), freePort(t), freePort(t), freePort(t)
	cfg := filepath.Join(t.TempDir(), "udpfwd.yaml")
	relay := func(name, listen, extra string) string {
		return fmt.Sprintf("  - name: %s\n    listen: [%q]\n    upstream: %s\n%s", name, listen, up.LocalAddr(), extra)
	}
	relayConfig(t, cfg, relay("a", listenA, "")+relay("b", listenB, "")+relay("c", listenC, ""))
	cmd, stderr, done := startDaemon(t, "-c", cfg)
	defer stopDaemon(t, cmd, done)

	idA, idB := wgproto.ClientID{0xa, 0, 1}, wgproto.ClientID{0xb, 0, 1}
	clientA := dial(t, listenA)
	clientB := dial(t, listenB)
	clientA.Write(wgtest.Initiation(idA, 1))
	portA := upstreamSource(t, up, idA)
	clientB.Write(wgtest.Initiation(idB, 1))
	portB := upstreamSource(t, up, idB)

	// b gets a new idle timeout, c goes, d comes; a is unchanged.
	relayConfig(t, cfg, relay("a", listenA, "")+relay("b", listenB, "    idle_timeout: 20m\n")+relay("d", listenD, ""))
	cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(stderr.String(), "reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload in the log:\n%s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	log := stderr.String()
	for _, want := range []string{`"unchanged": 1`, `"changed": 1`, `"added": 1`, `"removed": 1`} {
		if !strings.Contains(log, want) {
			t.Errorf("reload log lacks %s:\n%s", want, log)
		}
	}

	// Transport datagrams need a live session: both sessions are still
	// there, on the same upstream ports.
	clientA.Write(wgtest.Transport(idA, 1, 1, 64))
	if got := upstreamSource(t, up, idA); got != portA {
		t.Fatalf("after the reload the unchanged relay's session comes from %v, before %v", got, portA)
	}
	clientB.Write(wgtest.Transport(idB, 1, 1, 64))
	if got := upstreamSource(t, up, idB); got != portB {
		t.Fatalf("after the reload the changed relay's session comes from %v, before %v", got, portB)
	}
	// d is up, c is gone.
	idD := wgproto.ClientID{0xd, 0, 1}
	dial(t, listenD).Write(wgtest.Initiation(idD, 1))
	upstreamSource(t, up, idD)
	if l, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(listenC))); err != nil {
		t.Errorf("relay c still holds its port: %v", err)
	} else {
		l.Close()
	}

	// A broken config is refused and changes nothing.
	os.WriteFile(cfg, []byte("relays:\n  - name: a\n    bogus: 1\n"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	deadline = time.Now().Add(5 * time.Second)
	for !strings.Contains(stderr.String(), "config not applied") {
		if time.Now().After(deadline) {
			t.Fatalf("no refusal in the log:\n%s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	clientA.Write(wgtest.Transport(idA, 1, 2, 64))
	if got := upstreamSource(t, up, idA); got != portA {
		t.Fatalf("after a refused reload the session comes from %v, before %v", got, portA)
	}
}

func dial(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	relayConfig(t, good, "  - name: warp\n    listen: [\"[::]:2408\"]\n    upstream: engage.cloudflareclient.com:2408\n")
	code, stdout, stderr := udpfwd(t, "check", "-c", good)
	if code != 0 || !strings.Contains(stdout, "idle_timeout: 10m") || stderr != "" {
		t.Fatalf("check of a good file: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	bad := filepath.Join(dir, "bad.yaml")
	relayConfig(t, bad, "  - name: warp\n    listen: [\"[::]:2408\"]\n    upstream: engage.cloudflareclient.com:2408\n    idle_timeout: 10x\n")
	code, _, stderr = udpfwd(t, "check", "-c", bad)
	if code != 2 || !strings.Contains(stderr, "bad.yaml:5") || !strings.Contains(stderr, "idle_timeout") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("check of a bad file: exit %d, stderr %q; want 2 and one line naming file:line and the key", code, stderr)
	}
	// A value that works but probably does not do what was meant is
	// warned about on stderr; the file is valid.
	short := filepath.Join(dir, "short.yaml")
	relayConfig(t, short, "  - name: warp\n    listen: [\"[::]:2408\"]\n    upstream: engage.cloudflareclient.com:2408\n    idle_timeout: 10s\n")
	code, stdout, stderr = udpfwd(t, "check", "-c", short)
	if code != 0 || !strings.Contains(stdout, "idle_timeout: 10s") ||
		!strings.HasPrefix(stderr, "udpfwd: warning: "+short+":5: relays[0].idle_timeout: 10s is shorter than the 25s") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("check of a file with a short idle timeout: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// The example config that ships is valid.
	if code, _, stderr := udpfwd(t, "check", "-q", "-c", exampleConfig(t)); code != 0 {
		t.Fatalf("the example config is refused: %s", stderr)
	}
}
