package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// The flags of the plain and dead-endpoint demos refuse what they cannot
// show, in one line, exit 2.
func TestPoolFlagsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"kill with one endpoint", []string{"--kill-endpoint"}, "needs --endpoints 2 or more"},
		{"kill straight to the edge", []string{"--endpoints", "2", "--kill-endpoint", "--direct-only"}, "excludes --direct-only"},
		{"no endpoint", []string{"--endpoints", "0"}, "want 1..8"},
		{"edge addresses for other endpoints", []string{"--endpoints", "2", "--edge", "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"}, "3 addresses for 2 endpoints"},
		{"relay without every edge port", []string{"--endpoints", "2", "--relay", "127.0.0.1:4500", "--edge", "127.0.0.1:2408"}, "one per endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(tc.args, &out, &errOut); code != 2 || out.Len() != 0 ||
				strings.Count(errOut.String(), "\n") != 1 || !strings.Contains(errOut.String(), tc.msg) {
				t.Errorf("run(%q) = %d, stdout %q, stderr %q; want 2 and one line with %q", tc.args, code, out.String(), errOut.String(), tc.msg)
			}
		})
	}
}

// A plain client (no client ID) straight to the edge breaks at its first
// port change, as an ID client does.
func TestDemoPlainDirect(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"--plain", "--direct-only", "--size", "16MiB", "--stall", "2s"}, &out, &errOut)
	t.Logf("\n%s%s", out.String(), errOut.String())
	if code != 0 || !strings.Contains(out.String(), "client ID         none (plain WireGuard)") || !strings.Contains(out.String(), "STALLED at") {
		t.Fatalf("exit %d, want 0 and a plain client that stalled", code)
	}
}

// A plain client (no client ID) through the in-process udpfwd, which tracks
// it by its handshakes' indexes (--zero-id track), keeps one source port at
// the edge across its port changes.
func TestDemoPlainThroughRelay(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"--plain", "--relay-only", "--size", "16MiB", "--stall", "10s"}, &out, &errOut)
	t.Logf("\n%s%s", out.String(), errOut.String())
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	for _, want := range []string{"client ID         none (plain WireGuard)", "complete, every byte verified", "1 source port(s)", "1 of 3"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// The endpoint the client's session uses goes dark mid-download: through
// udpfwd the client works again through the other endpoint, and a new
// client goes straight to it. It takes WireGuard's 15 s to notice and two
// retries 5 s apart.
func TestDemoKillEndpoint(t *testing.T) {
	var out, errOut bytes.Buffer
	start := time.Now()
	code := run([]string{"--endpoints", "2", "--kill-endpoint", "--size", "8MiB"}, &out, &errOut)
	t.Logf("in %v:\n%s%s", time.Since(start).Round(time.Millisecond), out.String(), errOut.String())
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	for _, want := range []string{"endpoint went dark", "worked again after", "dead endpoint left", "second download      complete, every byte verified",
		"new client           went straight to", "result: as expected"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
