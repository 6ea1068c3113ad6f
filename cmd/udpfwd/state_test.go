package main

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// freePort returns a loopback UDP port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// startDaemon starts udpfwd and waits until it logs that it started.
func startDaemon(t *testing.T, args ...string) (*exec.Cmd, *lockedBuffer, chan error) {
	t.Helper()
	return startCmd(t, exec.Command(binary, args...))
}

// startCmd starts cmd, a udpfwd command, and waits until it logs that it
// started.
func startCmd(t *testing.T, cmd *exec.Cmd) (*exec.Cmd, *lockedBuffer, chan error) {
	t.Helper()
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(stderr.String(), "relay started") {
		if time.Now().After(deadline) {
			t.Fatalf("udpfwd did not start: %s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cmd, stderr, done
}

func stopDaemon(t *testing.T, cmd *exec.Cmd, done chan error) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("udpfwd exited with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("udpfwd did not stop")
	}
}

// A relay stopped with SIGTERM and started again with the same state file
// sends every session's datagrams from the same upstream port as before,
// while the clients keep sending.
func TestRestartKeepsUpstreamPorts(t *testing.T) {
	upstream, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer upstream.Close()
	listen := freePort(t)
	stateFile := filepath.Join(t.TempDir(), "state.json")
	args := []string{"-r", listen, upstream.LocalAddr().String(), "--state-file", stateFile}
	cmd, _, done := startDaemon(t, args...)

	relayAddr := netip.MustParseAddrPort(listen)
	ids := []wgproto.ClientID{{1, 1, 1}, {2, 2, 2}, {3, 3, 3}}
	clients := make([]*net.UDPConn, len(ids))
	for i, id := range ids {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(relayAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
		c.Write(wgtest.Initiation(id, uint32(i)))
	}
	// The port the upstream sees for each client ID before the restart.
	ports := map[wgproto.ClientID]netip.AddrPort{}
	buf := make([]byte, 2048)
	upstream.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(ports) < len(ids) {
		n, from, err := upstream.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("upstream: %v", err)
		}
		ports[wgproto.ClientID(buf[1:4])] = from
		_ = n
	}

	// The clients keep sending transport datagrams throughout.
	var stop atomic.Bool
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for seq := uint64(0); !stop.Load(); seq++ {
			for i, id := range ids {
				clients[i].Write(wgtest.Transport(id, 7, seq, 64))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	defer func() { stop.Store(true); <-sent }()

	stopDaemon(t, cmd, done)
	drain(upstream) // what arrived before the restart
	cmd, stderr, done := startDaemon(t, args...)
	defer stopDaemon(t, cmd, done)

	// After the restart every client ID is heard again, from its old port.
	heard := map[wgproto.ClientID]bool{}
	upstream.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(heard) < len(ids) {
		_, from, err := upstream.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("upstream after restart: %v (heard %d of %d); log:\n%s", err, len(heard), len(ids), stderr.String())
		}
		id := wgproto.ClientID(buf[1:4])
		if from != ports[id] {
			t.Fatalf("after the restart client %v comes from %v, before from %v", id, from, ports[id])
		}
		heard[id] = true
	}
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(stderr.String(), "session restored") < len(ids) {
		if time.Now().After(deadline) {
			t.Fatalf("the log does not say every session was restored:\n%s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// drain reads whatever is queued on c.
func drain(c *net.UDPConn) {
	buf := make([]byte, 2048)
	for {
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
			return
		}
	}
}

func TestCorruptStateFileKeptAside(t *testing.T) {
	dir := t.TempDir()
	stateFile := filepath.Join(dir, "state.json")
	garbage := "this is not a state file\n"
	if err := os.WriteFile(stateFile, []byte(garbage), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, stderr, done := startDaemon(t, "-r", "127.0.0.1:0", "127.0.0.1:9", "--state-file", stateFile)
	stopDaemon(t, cmd, done)
	matches, _ := filepath.Glob(stateFile + ".bad-*")
	if len(matches) != 1 {
		t.Fatalf("bad file kept as %v, want one; log:\n%s", matches, stderr.String())
	}
	if b, _ := os.ReadFile(matches[0]); string(b) != garbage {
		t.Fatal("the bad file's content was not kept")
	}
	if !strings.Contains(stderr.String(), "state file unusable") {
		t.Errorf("no clear error in the log:\n%s", stderr.String())
	}
	// The relay saved a fresh, valid state file on the way out.
	if b, err := os.ReadFile(stateFile); err != nil || !strings.Contains(string(b), "udpfwd-state") {
		t.Fatalf("no new state file: %v", err)
	}
}
