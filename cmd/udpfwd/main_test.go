package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// binary is udpfwd built once for these tests: they run the real program.
var binary string

// waitTimeout bounds every wait for something that should happen: a log
// line, a datagram, an exit. It only costs time when a test fails, so it is
// generous: the machine running the tests may be busy for seconds.
const waitTimeout = 30 * time.Second

// eventually polls cond until it holds; if it does not within waitTimeout,
// the test fails, naming what it waited for and what state (if not nil)
// says then.
func eventually(t *testing.T, what string, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("timed out after %v waiting for %s", waitTimeout, what)
			if state != nil {
				msg += ":\n" + state()
			}
			t.Fatal(msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "udpfwd-cli")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "udpfwd")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		panic("build udpfwd: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// udpfwd runs the binary to completion (bounded) and returns its exit
// code, stdout and stderr.
func udpfwd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), stdout.String(), stderr.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, stdout.String(), stderr.String()
	case <-time.After(waitTimeout):
		cmd.Process.Kill()
		t.Fatalf("udpfwd %v did not exit", args)
		return 0, "", ""
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rules")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadInput(t *testing.T) {
	taken, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	inUse := taken.LocalAddr().String()

	tests := []struct {
		name string
		args []string
		code int
		msg  string // a part of the one line on stderr
	}{
		{"unknown flag", []string{"--bogus"}, 2, "bogus"},
		{"cluster off loopback without TLS", []string{"-r", "127.0.0.1:0", "127.0.0.1:2408", "--cluster", "edge",
			"--cluster-bind", "192.0.2.1:7000", "--cluster-peers", "192.0.2.1:7000,192.0.2.2:7000"}, 2, "192.0.2.1:7000 is not loopback"},
		{"-r without arguments", []string{"-r"}, 2, "LISTEN and UPSTREAM"},
		{"-r with one argument", []string{"-r", "127.0.0.1:0"}, 2, "LISTEN and UPSTREAM"},
		{"-r with three arguments", []string{"-r", "127.0.0.1:0", "127.0.0.1:1", "x"}, 2, "LISTEN and UPSTREAM"},
		{"bad listen address", []string{"-r", "nowhere", "127.0.0.1:2408"}, 2, `"nowhere"`},
		{"listen port too big", []string{"-r", "127.0.0.1:70000", "127.0.0.1:2408"}, 2, "70000"},
		{"upstream without port", []string{"-r", "127.0.0.1:0", "127.0.0.1"}, 2, "UPSTREAM"},
		{"upstream port 0", []string{"-r", "127.0.0.1:0", "127.0.0.1:0"}, 2, "UPSTREAM"},
		{"upstream port not a number", []string{"-r", "127.0.0.1:0", "example.com:http2"}, 2, "http2"},
		{"bad idle timeout", []string{"-r", "127.0.0.1:0", "127.0.0.1:2408", "--idle-timeout", "soon"}, 2, "idle-timeout"},
		{"negative idle timeout", []string{"-r", "127.0.0.1:0", "127.0.0.1:2408", "--idle-timeout", "-1s"}, 2, "idle-timeout"},
		{"bad log level", []string{"-r", "127.0.0.1:0", "127.0.0.1:2408", "--log-level", "loud"}, 2, "loud"},
		{"bad log format", []string{"-r", "127.0.0.1:0", "127.0.0.1:2408", "--log-format", "xml"}, 2, "xml"},
		{"-r and -f", []string{"-r", "127.0.0.1:0", "127.0.0.1:2408", "-f", "x"}, 2, "together"},
		{"stray argument", []string{"127.0.0.1:0"}, 2, "127.0.0.1:0"},
		{"missing file", []string{"-f", "/nonexistent/rules"}, 2, "/nonexistent/rules"},
		{"file with a bad line", []string{"-f", writeFile(t, "# ok\n127.0.0.1,40000,127.0.0.1,0,127.0.0.1,9\n127.0.0.1,x,127.0.0.1,0,127.0.0.1,9\n")}, 2, ":3:"},
		{"file with 5 fields", []string{"-f", writeFile(t, "127.0.0.1,1,127.0.0.1,0,127.0.0.1")}, 2, ":1:"},
		{"empty file", []string{"-f", writeFile(t, "# nothing\n\n")}, 2, "no rules"},
		{"port in use", []string{"-r", inUse, "127.0.0.1:2408"}, 1, "address already in use"},
		{"port in use in a file", []string{"-f", writeFile(t, "\n127.0.0.1,"+strings.Split(inUse, ":")[1]+",127.0.0.1,0,127.0.0.1,9")}, 1, ":2:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := udpfwd(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stderr: %s", code, tt.code, stderr)
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "udpfwd: ") {
				t.Fatalf("stderr is not one 'udpfwd: ...' line:\n%s", stderr)
			}
			if !strings.Contains(lines[0], tt.msg) {
				t.Errorf("message %q does not name %q", lines[0], tt.msg)
			}
			if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
				t.Error("stderr shows a stack trace")
			}
		})
	}
}

func TestNoArgumentsPrintsUsage(t *testing.T) {
	code, stdout, stderr := udpfwd(t)
	if code != 2 || !strings.Contains(stderr, "Usage:") || stdout != "" {
		t.Fatalf("exit %d, stderr %q; want 2 and usage on stderr", code, stderr)
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		code, stdout, _ := udpfwd(t, arg)
		if code != 0 || !strings.Contains(stdout, "--idle-timeout") || !strings.Contains(stdout, "-r LISTEN UPSTREAM") {
			t.Errorf("%s: exit %d, stdout %q", arg, code, stdout)
		}
	}
	code, stdout, _ := udpfwd(t, "--version")
	if code != 0 || !strings.HasPrefix(stdout, "udpfwd ") {
		t.Errorf("--version: exit %d, stdout %q", code, stdout)
	}
}

// lockedBuffer is a bytes.Buffer that a process may write while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// SIGTERM and SIGINT stop the relay: it exits 0. The README says it does
// within 2 s; the time is logged, not asserted, since a busy machine can
// take longer through no fault of udpfwd's. Not stopping at all fails.
func TestSignalsStopCleanly(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd, stderr, done := startDaemon(t, "-r", "127.0.0.1:0", "127.0.0.1:2408")
			start := time.Now()
			cmd.Process.Signal(sig)
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("exit: %v; stderr: %s", err, stderr.String())
				}
				t.Logf("stopped %v after the signal", time.Since(start).Round(time.Millisecond))
			case <-time.After(waitTimeout):
				t.Fatalf("did not stop within %v", waitTimeout)
			}
		})
	}
}

// An idle timeout under WARP's keepalive interval is not refused: the
// relay starts and logs a warning naming the flag.
func TestShortIdleTimeoutWarned(t *testing.T) {
	cmd, stderr, done := startDaemon(t, "-r", "127.0.0.1:0", "127.0.0.1:2408", "--idle-timeout", "10s")
	stopDaemon(t, cmd, done)
	if s := stderr.String(); !strings.Contains(s, "WARN\tconfig: --idle-timeout: 10s is shorter than the 25s") {
		t.Errorf("no warning in the log:\n%s", s)
	}
}

// udpfwd -h reads cleanly: one column of flags, one of help, each flag's
// value named, no default said twice.
func TestHelpReadsCleanly(t *testing.T) {
	code, stdout, _ := udpfwd(t, "-h")
	_, flags, ok := strings.Cut(stdout, "\nFlags:\n")
	if code != 0 || !ok {
		t.Fatalf("exit %d, no Flags section:\n%s", code, stdout)
	}
	column := -1
	for _, line := range strings.Split(strings.TrimSuffix(flags, "\n"), "\n") {
		start := len(line) - len(strings.TrimLeft(line, " "))
		i := strings.Index(line[start:], "   ")
		if i < 0 {
			t.Fatalf("no space between the columns: %q", line)
		}
		text := strings.TrimLeft(line[start+i:], " ")
		if c := len(line) - len(text); column < 0 {
			column = c
		} else if c != column {
			t.Errorf("help text at column %d, not %d: %q", c, column, line)
		}
		if strings.Count(line, "(default") > 1 || strings.Contains(line, "[=") || strings.Contains(line, " long ") ||
			strings.Contains(line, " string ") || strings.Contains(line, " int ") {
			t.Errorf("a glitch: %q", line)
		}
	}
	for _, want := range []string{"-r LISTEN UPSTREAM", "-c FILE", "--socket-buffer SIZE", "(default 4MiB)", "--idle-timeout D", "(default 10m)", "-h, --help"} {
		if !strings.Contains(flags, want) {
			t.Errorf("the flags do not show %q:\n%s", want, flags)
		}
	}
}

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

// startDaemon starts udpfwd with args and waits until it is ready.
func startDaemon(t *testing.T, args ...string) (*exec.Cmd, *lockedBuffer, chan error) {
	t.Helper()
	return startCmd(t, exec.Command(binary, args...))
}

// startCmd starts cmd, a udpfwd command, and waits until it is ready: until
// it says so on $NOTIFY_SOCKET (READY=1, as to systemd), which it does once
// every relay, the admin listener and the state saver run. Its "relay
// started" lines come earlier, while start-up goes on, and a signal then ends
// start-up without the stop of a running udpfwd (no state is saved), so a
// test that waited for them could stop a udpfwd that had not finished
// starting.
func startCmd(t *testing.T, cmd *exec.Cmd) (*exec.Cmd, *lockedBuffer, chan error) {
	t.Helper()
	name := fmt.Sprintf("@udpfwd-test-%d-%d", os.Getpid(), notifySockets.Add(1)) // abstract: any user may send to it
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { notify.Close() })
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+name)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	ready := make(chan error, 1)
	go func() {
		notify.SetReadDeadline(time.Now().Add(waitTimeout))
		buf := make([]byte, 4096)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				ready <- err
				return
			}
			if strings.Contains(string(buf[:n]), "READY=1") {
				ready <- nil
				return
			}
		}
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("udpfwd did not get ready: %v; log:\n%s", err, stderr.String())
		}
	case err := <-done:
		t.Fatalf("udpfwd exited while starting: %v; log:\n%s", err, stderr.String())
	}
	return cmd, stderr, done
}

// notifySockets numbers the tests' $NOTIFY_SOCKETs.
var notifySockets atomic.Int64

// stopDaemon sends udpfwd SIGTERM and waits until it exits, with status 0.
func stopDaemon(t *testing.T, cmd *exec.Cmd, done chan error) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("udpfwd exited with %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("udpfwd did not stop")
	}
}

// dial returns a UDP socket connected to addr, closed at the end of the test.
func dial(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// relayConfig writes a config file with the given relays section.
func relayConfig(t *testing.T, path, relays string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("relays:\n"+relays), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitLog waits until the log holds n lines containing every one of parts.
func waitLog(t *testing.T, log *lockedBuffer, n int, parts ...string) {
	t.Helper()
	lines := func() int {
		got := 0
		for _, line := range strings.Split(log.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				got++
			}
		}
		return got
	}
	eventually(t, fmt.Sprintf("%d log lines with %q", n, parts), func() bool { return lines() >= n }, log.String)
}
