package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// udpfwd check validates a config file: a good one is printed with its
// defaults and exit 0; a bad one is refused in one line naming file:line
// and the key, with exit 2; a doubtful value is warned about.
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
