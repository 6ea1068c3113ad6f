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

// upstreamSource reads from up until a datagram of client id arrives and
// returns where it came from.
func upstreamSource(t *testing.T, up *net.UDPConn, id wgproto.ClientID) netip.AddrPort {
	t.Helper()
	buf := make([]byte, 2048)
	up.SetReadDeadline(time.Now().Add(waitTimeout))
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
	eventually(t, "the reload", func() bool { return strings.Contains(stderr.String(), "reloaded") }, stderr.String)
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
	eventually(t, "the refusal", func() bool { return strings.Contains(stderr.String(), "config not applied") }, stderr.String)
	clientA.Write(wgtest.Transport(idA, 1, 2, 64))
	if got := upstreamSource(t, up, idA); got != portA {
		t.Fatalf("after a refused reload the session comes from %v, before %v", got, portA)
	}
}
