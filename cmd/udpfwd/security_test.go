package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// The security flags through the built binary: bad values are refused with
// exit 2 and one line naming the flag, good ones start the relay, and the
// allow-list and the upstream key decide what reaches the upstream.

func TestSecurityFlagsRefused(t *testing.T) {
	relayArgs := []string{"-r", "127.0.0.1:0", "127.0.0.1:2408"}
	tests := []struct {
		name string
		args []string
		msg  string // a part of the one line on stderr
	}{
		{"public key not base64", []string{"--upstream-public-key", "not a key"}, "--upstream-public-key"},
		{"public key too short", []string{"--upstream-public-key", "qBoV"}, "--upstream-public-key"},
		{"client ID zzz", []string{"--allow-client", "zzz"}, "--allow-client"},
		{"client ID zero", []string{"--allow-client", "000000"}, "zero"},
		{"client ID triple out of range", []string{"--allow-client", "168,26,256"}, "--allow-client"},
		{"second client ID bad", []string{"--allow-client", "qBoV", "--allow-client", "qBo"}, `"qBo"`},
		{"allow CIDR not a CIDR", []string{"--allow-cidr", "loopback"}, "--allow-cidr"},
		{"deny CIDR with host bits", []string{"--deny-cidr", "127.0.0.1/8"}, "127.0.0.0/8"},
		{"IPv6 deny CIDR with host bits", []string{"--deny-cidr", "::1/64"}, "--deny-cidr"},
		{"client rate x", []string{"--client-rate", "x"}, "--client-rate"},
		{"client rate negative", []string{"--client-rate", "-5"}, "--client-rate"},
		{"client rate NaN", []string{"--client-rate", "NaN"}, "--client-rate"},
		{"client rate infinite", []string{"--client-rate", "Inf"}, "--client-rate"},
		{"client byte rate bad", []string{"--client-rate", "100,lots"}, "--client-rate"},
		{"max sessions negative", []string{"--max-sessions", "-1"}, "--max-sessions"},
		{"max sessions not a number", []string{"--max-sessions", "many"}, "max-sessions"},
		{"sessions per IP negative", []string{"--max-sessions-per-ip", "-1"}, "--max-sessions-per-ip"},
		{"new sessions per IP negative", []string{"--new-sessions-per-ip", "-1"}, "--new-sessions-per-ip"},
		{"new sessions per IP NaN", []string{"--new-sessions-per-ip", "NaN"}, "--new-sessions-per-ip"},
		{"new-session burst negative", []string{"--new-sessions-per-ip-burst", "-2"}, "--new-sessions-per-ip-burst"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := udpfwd(t, append(relayArgs, tt.args...)...)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d; stderr: %s", code, exitUsage, stderr)
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "udpfwd: ") {
				t.Fatalf("stderr is not one 'udpfwd: ...' line:\n%s", stderr)
			}
			if !strings.Contains(lines[0], tt.msg) {
				t.Errorf("message %q does not name %q", lines[0], tt.msg)
			}
		})
	}
}

// Every security flag with a good value: the relay starts, and stops with
// exit 0 on SIGTERM.
func TestSecurityFlagsAccepted(t *testing.T) {
	cmd, stderr, done := startDaemon(t, "-r", "127.0.0.1:0", "127.0.0.1:2408",
		"--upstream-public-key", wgproto.WARPPublicKey,
		"--allow-client", "qBoV", "--allow-client", "a81a16", "--allow-client", "168,26,23",
		"--allow-client", "[1, 2, 3]", "--allow-client", "0x0a0b0c",
		"--allow-cidr", "127.0.0.0/8", "--allow-cidr", "::1", "--allow-cidr", "192.0.2.0/24,2001:db8::/32",
		"--deny-cidr", "127.0.0.2/32",
		"--max-sessions", "100", "--max-sessions-per-ip", "4",
		"--new-sessions-per-ip", "0.5", "--new-sessions-per-ip-burst", "3",
		"--client-rate", "5000,50MiB")
	stopDaemon(t, cmd, done)
	if s := stderr.String(); strings.Contains(s, "udpfwd: ") || strings.Contains(s, "ERROR") {
		t.Errorf("errors on stderr:\n%s", s)
	}
}

// adminAddr waits for udpfwd to log its admin listener's address.
func adminAddr(t *testing.T, stderr *lockedBuffer) string {
	t.Helper()
	re := regexp.MustCompile(`admin listener started\s+\{"addr": "([^"]+)"\}`)
	var m []string
	eventually(t, "the admin listener's address in the log", func() bool {
		m = re.FindStringSubmatch(stderr.String())
		return m != nil
	}, stderr.String)
	return m[1]
}

// dropped reads udpfwd's drop counter for reason from its metrics.
func dropped(t *testing.T, admin, reason string) int {
	t.Helper()
	c := http.Client{Timeout: waitTimeout}
	res, err := c.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	label := fmt.Sprintf(`reason=%q`, reason)
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "udpfwd_dropped_datagrams_total{") && strings.Contains(line, label) {
			n, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			return int(n)
		}
	}
	t.Fatalf("no drop counter for %s in the metrics:\n%s", reason, body)
	return 0
}

// --allow-client (in the three forms) and --upstream-public-key decide,
// in the real process, which handshakes reach the upstream.
func TestSecurityFlagsThroughProcess(t *testing.T) {
	up, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	listen := freePort(t)
	cmd, stderr, done := startDaemon(t, "-r", listen, up.LocalAddr().String(), "--admin", "127.0.0.1:0",
		"--upstream-public-key", wgproto.WARPPublicKey,
		"--allow-client", "qBoV", "--allow-client", "1,2,3", "--allow-client", "0a0b0c")
	admin := adminAddr(t, stderr)

	pub, err := wgproto.ParsePublicKey(wgproto.WARPPublicKey)
	if err != nil {
		t.Fatal(err)
	}
	key := wgproto.NewMAC1Key(pub)
	signed := func(id wgproto.ClientID, sender uint32) []byte {
		b := wgtest.Initiation(id, sender)
		wgproto.PutMAC1(b, key)
		return b
	}
	allowed := map[wgproto.ClientID][]byte{
		{0xa8, 0x1a, 0x15}: signed(wgproto.ClientID{0xa8, 0x1a, 0x15}, 1), // qBoV
		{0x01, 0x02, 0x03}: signed(wgproto.ClientID{0x01, 0x02, 0x03}, 2),
		{0x0a, 0x0b, 0x0c}: signed(wgproto.ClientID{0x0a, 0x0b, 0x0c}, 3),
	}
	c := dial(t, listen)
	defer c.Close()
	// Refused first: two IDs not on the list (with a valid mac1), and a
	// listed ID whose mac1 is wrong.
	for _, b := range [][]byte{
		signed(wgproto.ClientID{0xa8, 0x1a, 0x16}, 4),
		signed(wgproto.ClientID{0x03, 0x02, 0x01}, 5),
		wgtest.Initiation(wgproto.ClientID{0xa8, 0x1a, 0x15}, 6),
	} {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range allowed {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	up.SetReadDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, 2048)
	for seen := 0; seen < len(allowed); seen++ {
		n, _, err := up.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("the upstream got %d of the %d allowed handshakes: %v", seen, len(allowed), err)
		}
		if want := allowed[wgproto.ClientID(buf[1:4])]; !bytes.Equal(buf[:n], want) {
			t.Fatalf("the upstream got a handshake that should have been refused: % x", buf[:n])
		}
	}
	eventually(t, "the refusals to be counted", func() bool {
		return dropped(t, admin, "client_not_allowed") == 2 && dropped(t, admin, "bad_mac1") == 1
	}, func() string {
		return fmt.Sprintf("udpfwd counted %d client_not_allowed (want 2) and %d bad_mac1 (want 1)",
			dropped(t, admin, "client_not_allowed"), dropped(t, admin, "bad_mac1"))
	})
	// Refused handshakes are dropped, not late: nothing more arrives.
	up.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _, err := up.ReadFromUDPAddrPort(buf); err == nil {
		t.Errorf("the upstream got another datagram: % x", buf[:n])
	}
	stopDaemon(t, cmd, done)
}
