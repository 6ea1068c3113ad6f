package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/udpfwd/udpfwd/internal/state"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// exampleConfig is the example config that ships, with its state file in
// a directory of the test's (the example's /var/lib/udpfwd does not exist
// where tests run, and check refuses a state file without a directory).
func exampleConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("udpfwd.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const shipped = "state_file: /var/lib/udpfwd/state.json"
	if !strings.Contains(string(b), shipped) {
		t.Fatalf("the example config has no %q line", shipped)
	}
	dir := t.TempDir()
	out := strings.Replace(string(b), shipped, "state_file: "+filepath.Join(dir, "state.json"), 1)
	p := filepath.Join(dir, "udpfwd.yaml")
	if err := os.WriteFile(p, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Whatever sits at the state path, udpfwd starts, binds and stops on
// SIGTERM at once: a file it cannot use is moved aside as it is (never
// followed, never deleted), with one warning, and the relay starts empty.
func TestStateFileNotAFile(t *testing.T) {
	for _, tt := range []struct {
		name   string
		make   func(t *testing.T, path string)
		reason string
	}{
		{"FIFO", func(t *testing.T, path string) {
			if err := unix.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "named pipe"},
		{"symlink to /dev/zero", func(t *testing.T, path string) {
			if err := os.Symlink("/dev/zero", path); err != nil {
				t.Fatal(err)
			}
		}, "symbolic link"},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "directory"},
		{"oversized", func(t *testing.T, path string) {
			// A valid state file, one byte over the limit for one session.
			head := `{"format":"udpfwd-state","version":1,"relays":{}}`
			pad := strings.Repeat(" ", int(state.SizeLimit(1))+1-len(head))
			if err := os.WriteFile(path, []byte(head+pad), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "over the limit"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stateFile := filepath.Join(t.TempDir(), "state.json")
			tt.make(t, stateFile)
			before, err := os.Lstat(stateFile)
			if err != nil {
				t.Fatal(err)
			}
			cmd, stderr, done := startDaemon(t, "-r", "127.0.0.1:0", "127.0.0.1:9", "--max-sessions", "1", "--state-file", stateFile)
			stopDaemon(t, cmd, done)
			log := stderr.String()
			if n := strings.Count(log, "state file"); n != 1 || !strings.Contains(log, "state file unusable") || !strings.Contains(log, tt.reason) {
				t.Fatalf("want one warning saying %q; log:\n%s", tt.reason, log)
			}
			matches, _ := filepath.Glob(stateFile + ".bad-*")
			if len(matches) != 1 {
				t.Fatalf("kept aside as %v, want one", matches)
			}
			if after, err := os.Lstat(matches[0]); err != nil || !os.SameFile(before, after) {
				t.Fatalf("what was at the path was not moved aside as it was: %v", err)
			}
			// The relay saved a fresh, regular state file on the way out.
			if fi, err := os.Lstat(stateFile); err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("no new state file: %v", err)
			}
			if _, err := state.Load(stateFile, state.MinSizeLimit); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// savedSession is one session of a state file in the format udpfwd has
// always written.
func savedSession(id wgproto.ClientID, clientAddr, local, upstream, upstreamConfig string) string {
	return fmt.Sprintf(`{"id": "6f0c5c1e-3f53-4b0a-9f4e-0c0f6b1b9a%02x", "client": %q, "client_addr": %q, "upstream_local": %q, `+
		`"upstream": %q, "upstream_config": %q, "created": "2026-11-24T11:00:00Z"}`,
		id[0], id.String(), clientAddr, local, upstream, upstreamConfig)
}

// Restored sessions obey the configuration of today: one saved on a port
// outside upstream_ports is re-bound in the range (with a warning); one
// saved for an upstream that is not configured any more, or with another
// upstream address than the configured one, is dropped (with a warning).
func TestRestoreObeysConfig(t *testing.T) {
	upstream, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer upstream.Close()
	up := upstream.LocalAddr().String()
	listen := freePort(t)
	client, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(listen)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	clientAddr := client.LocalAddr().String()

	const first, last = 20000, 20100
	outside := freePort(t) // an ephemeral port, above the range
	inRange := func(p uint16) bool { return p >= first && p <= last }
	if p := netip.MustParseAddrPort(outside).Port(); inRange(p) {
		t.Fatalf("port %d chosen as outside the range is in it", p)
	}
	idRebound, idGone, idMoved := wgproto.ClientID{1, 1, 1}, wgproto.ClientID{2, 2, 2}, wgproto.ClientID{3, 3, 3}
	other := strings.Replace(up, "127.0.0.1", "127.0.0.2", 1)
	dir := t.TempDir()
	stateFile := filepath.Join(dir, "state.json")
	sessions := []string{
		savedSession(idRebound, clientAddr, outside, up, up),
		savedSession(idGone, clientAddr, "127.0.0.1:20001", "198.51.100.1:2408", "198.51.100.1:2408"),
		savedSession(idMoved, clientAddr, "127.0.0.1:20002", other, up),
	}
	file := `{"format": "udpfwd-state", "version": 1, "saved": "2026-11-24T12:00:00Z", "relays": {"warp": [` + strings.Join(sessions, ",") + `]}}`
	if err := os.WriteFile(stateFile, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "udpfwd.yaml")
	yaml := fmt.Sprintf("state_file: %s\nrelays:\n  - name: warp\n    listen: [%q]\n    upstream: %s\n    upstream_ports: %d-%d\n    security:\n      max_sessions: 10\n",
		stateFile, listen, up, first, last)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}

	cmd, stderr, done := startDaemon(t, "-c", cfg)
	waitLog(t, stderr, 1, "WARN", "session restored on a new upstream port", idRebound.String(), "outside upstream_ports")
	waitLog(t, stderr, 1, "WARN", "saved session not restored", idGone.String(), "saved for upstream")
	waitLog(t, stderr, 1, "WARN", "saved session not restored", idMoved.String(), "is not the configured")

	// Only a restored session forwards a transport datagram: the dropped
	// ones' go nowhere, the re-bound one's leaves from a port in the range.
	client.Write(wgtest.Transport(idGone, 1, 1, 64))
	client.Write(wgtest.Transport(idMoved, 1, 1, 64))
	client.Write(wgtest.Transport(idRebound, 1, 1, 64))
	buf := make([]byte, 2048)
	upstream.SetReadDeadline(time.Now().Add(waitTimeout))
	n, from, err := upstream.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("upstream: %v; log:\n%s", err, stderr.String())
	}
	if got := wgproto.ClientID(buf[1:4]); n < 4 || got != idRebound {
		t.Fatalf("upstream got client %v's datagram, want only %v's", got, idRebound)
	}
	if !inRange(from.Port()) {
		t.Fatalf("the re-bound session sends from %v, outside %d-%d", from, first, last)
	}
	stopDaemon(t, cmd, done)

	// What is saved is what runs: one session, on its new port.
	f, err := state.Load(stateFile, state.MinSizeLimit)
	if err != nil {
		t.Fatal(err)
	}
	if ss := f.Relays["warp"]; len(ss) != 1 || ss[0].Client != idRebound || ss[0].UpstreamLocal.Port() != from.Port() {
		t.Fatalf("saved %+v, want only %v on port %d", ss, idRebound, from.Port())
	}
}

// A second udpfwd on the same state file fails at once, in one line naming
// the first one's PID; the first keeps running.
func TestSecondInstanceRefused(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "state.json")
	cmd, stderr, done := startDaemon(t, "-r", "127.0.0.1:0", "127.0.0.1:9", "--state-file", stateFile)
	code, _, errOut := udpfwd(t, "-r", "127.0.0.1:0", "127.0.0.1:9", "--state-file", stateFile)
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if code != 1 || len(lines) != 1 || !strings.Contains(lines[0], "pid "+strconv.Itoa(cmd.Process.Pid)) {
		t.Fatalf("second instance: exit %d, stderr %q; want 1 and one line naming pid %d", code, errOut, cmd.Process.Pid)
	}
	if strings.Contains(errOut, "relay started") {
		t.Fatal("the second instance started a relay")
	}
	stopDaemon(t, cmd, done)
	if strings.Contains(stderr.String(), "ERROR") {
		t.Fatalf("the first instance logged an error:\n%s", stderr.String())
	}
	// Once the first has stopped, the file is free again.
	cmd, _, done = startDaemon(t, "-r", "127.0.0.1:0", "127.0.0.1:9", "--state-file", stateFile)
	stopDaemon(t, cmd, done)
}

// A state file whose directory does not exist fails the start (exit 1) and
// check (exit 2), each with one line, before anything runs.
func TestStateDirMissing(t *testing.T) {
	dir := t.TempDir()
	stateFile := filepath.Join(dir, "missing", "state.json")
	for _, tt := range []struct {
		name string
		args []string
		code int
	}{
		{"start", []string{"-r", "127.0.0.1:0", "127.0.0.1:9", "--state-file", stateFile}, 1},
		{"check", []string{"check", "-c", writeConfig(t, dir, stateFile)}, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := udpfwd(t, tt.args...)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != tt.code || len(lines) != 1 || !strings.Contains(lines[0], "does not exist") {
				t.Fatalf("exit %d, stderr %q; want %d and one line saying the directory does not exist", code, stderr, tt.code)
			}
		})
	}
	if _, err := os.Stat(filepath.Dir(stateFile)); err == nil {
		t.Fatal("the directory was created")
	}
}

// writeConfig writes a config of one relay with the given state file.
func writeConfig(t *testing.T, dir, stateFile string) string {
	t.Helper()
	p := filepath.Join(dir, "udpfwd.yaml")
	yaml := "state_file: " + stateFile + "\nrelays:\n  - name: warp\n    listen: [\"127.0.0.1:0\"]\n    upstream: 127.0.0.1:9\n"
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A state file the relay may not read is moved aside and the relay starts
// with no sessions (no restart loop); a state directory it may not write
// fails the start and check. Root may read and write anything, so as root
// the test runs udpfwd as the user nobody (65534), on a file and a
// directory that belong to root.
func TestStateFilePermissions(t *testing.T) {
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		cred = &syscall.Credential{Uid: 65534, Gid: 65534}
		// nobody must reach the binary and the test's directories.
		if err := os.Chmod(filepath.Dir(binary), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	as := func(args ...string) *exec.Cmd {
		cmd := exec.Command(binary, args...)
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		return cmd
	}
	open := func(t *testing.T, mode os.FileMode) string {
		dir := t.TempDir()
		for _, d := range []string{filepath.Dir(dir), dir} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		return dir
	}

	t.Run("unreadable file", func(t *testing.T) {
		dir := open(t, 0o777) // writable by the relay
		stateFile := filepath.Join(dir, "state.json")
		f := state.New()
		if err := state.Save(stateFile, f); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(stateFile, 0o000); err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(stateFile) // root reads it; nobody may not
		cmd, stderr, done := startCmd(t, as("-r", "127.0.0.1:0", "127.0.0.1:9", "--state-file", stateFile))
		stopDaemon(t, cmd, done)
		if !strings.Contains(stderr.String(), "state file unusable") || !strings.Contains(stderr.String(), "permission denied") {
			t.Fatalf("no warning about the unreadable file:\n%s", stderr.String())
		}
		matches, _ := filepath.Glob(stateFile + ".bad-*")
		if len(matches) != 1 {
			t.Fatalf("kept aside as %v, want one", matches)
		}
		if cred != nil {
			if b, err := os.ReadFile(matches[0]); err != nil || string(b) != string(before) {
				t.Fatalf("the unreadable file was not kept as it was: %v", err)
			}
		}
		if _, err := os.Stat(stateFile); err != nil {
			t.Fatalf("no new state file: %v", err)
		}
	})

	t.Run("directory not writable", func(t *testing.T) {
		if cred == nil && os.Geteuid() == 0 {
			t.Skip("needs a user other than root")
		}
		dir := open(t, 0o755) // root's, read-only to nobody
		stateFile := filepath.Join(dir, "sub", "state.json")
		if err := os.Mkdir(filepath.Dir(stateFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if cred == nil {
			os.Chmod(filepath.Dir(stateFile), 0o555)
			defer os.Chmod(filepath.Dir(stateFile), 0o755)
		}
		cfg := writeConfig(t, t.TempDir(), stateFile)
		os.Chmod(filepath.Dir(cfg), 0o755)
		os.Chmod(cfg, 0o644)
		for _, tt := range []struct {
			name string
			cmd  *exec.Cmd
			code int
		}{
			{"start", as("-r", "127.0.0.1:0", "127.0.0.1:9", "--state-file", stateFile), 1},
			{"check", as("check", "-c", cfg), 2},
		} {
			var stderr strings.Builder
			tt.cmd.Stderr = &stderr
			err := runBounded(t, tt.cmd)
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if code != tt.code || len(lines) != 1 || !strings.Contains(lines[0], "not writable") {
				t.Errorf("%s: exit %d, stderr %q; want %d and one line saying it is not writable", tt.name, code, stderr.String(), tt.code)
			}
		}
	})
}

// runBounded runs cmd to its end, failing the test if that takes long.
func runBounded(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(waitTimeout):
		cmd.Process.Kill()
		t.Fatal("udpfwd did not exit")
		return nil
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
	upstream.SetReadDeadline(time.Now().Add(waitTimeout))
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
	upstream.SetReadDeadline(time.Now().Add(waitTimeout))
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
	waitLog(t, stderr, len(ids), "session restored")
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
