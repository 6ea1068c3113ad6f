package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
)

// seedFail runs the binary with args, which must make it exit with an
// error, and returns its stderr.
func seedFail(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), seedTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, args...).CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("udpfwd %v: %v, want it to exit with an error; output:\n%s", args, err, out)
	}
	return string(out)
}

// A listening port is private: a second udpfwd on a port in use fails with
// "port in use", unless both it and the one holding the port set
// --reuse-port, which needs one worker (auto is one with --reuse-port).
func TestReusePortThroughBinary(t *testing.T) {
	up := seedUpstream(t).LocalAddr().String()
	t.Run("private", func(t *testing.T) {
		listen := seedPort(t)
		waitStderr(t, seedRun(t, "--workers=2", "-r", listen, up), "relay started")
		for _, args := range [][]string{
			{"-r", listen, up},
			{"--reuse-port", "-r", listen, up},
		} {
			out := seedFail(t, args...)
			if !strings.Contains(out, "port in use") {
				t.Errorf("udpfwd %v on a port in use said:\n%s\nwant \"port in use\"", args, out)
			}
		}
	})
	t.Run("shared", func(t *testing.T) {
		listen := seedPort(t)
		waitStderr(t, seedRun(t, "--reuse-port", "--workers=1", "-r", listen, up), "relay started")
		waitStderr(t, seedRun(t, "--reuse-port", "-r", listen, up), "relay started")
		if out := seedFail(t, "-r", listen, up); !strings.Contains(out, "port in use") {
			t.Errorf("udpfwd without --reuse-port on a shared port said:\n%s\nwant \"port in use\"", out)
		}
	})
	t.Run("reuse-port with workers", func(t *testing.T) {
		out := seedFail(t, "--reuse-port", "--workers=2", "-r", seedPort(t), up)
		if !strings.Contains(out, "reuse_port") || strings.Count(strings.TrimSpace(out), "\n") > 2 {
			t.Errorf("--reuse-port --workers=2 said:\n%s\nwant a short refusal naming reuse_port", out)
		}
	})
}
