package main

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"64MiB", 64 << 20, true},
		{"16M", 16 << 20, true},
		{"1GiB", 1 << 30, true},
		{"512KiB", 512 << 10, true},
		{"1000000", 1000000, true},
		{"0", 0, false},
		{"-1MiB", 0, false},
		{"lots", 0, false},
		{"2000GiB", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSize(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Errorf("parseSize(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestFlagsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"one server", []string{"--servers", "1"}},
		{"no roams", []string{"--roams", "0"}},
		{"both only flags", []string{"--direct-only", "--relay-only"}},
		{"relay off loopback", []string{"--relay", "192.0.2.1:4500", "--edge", "127.0.0.1:2408"}},
		{"relay without a fixed edge port", []string{"--relay", "127.0.0.1:4500"}},
		{"stall past the re-handshake", []string{"--stall", "20s"}},
		{"stray argument", []string{"now"}},
		{"one node", []string{"--nodes", "1"}},
		{"nodes with a plain client", []string{"--nodes", "3", "--plain"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(tc.args, &out, &errOut); code != 2 {
				t.Errorf("run(%q) = %d, want 2; stderr: %s", tc.args, code, errOut.String())
			}
			if out.Len() != 0 {
				t.Errorf("run(%q) printed %q to stdout", tc.args, out.String())
			}
		})
	}
}

// demoStall is the --stall of the demo runs: well above the 1-3.5 s TCP in
// the userspace stacks needs after a roam, with room for a busy machine, so
// the relay case never stalls by chance; below the 15 s of a re-handshake.
// The direct case stalls however long it is given (its TCP stream lives on
// the server the router no longer sends it to), so the value only sets how
// long the test waits to see that.
const demoStall = "10s"

func TestDemo(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{
			"both cases",
			[]string{"--size", "16MiB", "--stall", demoStall},
			[]string{
				"through udpfwd", "complete, every byte verified", "STALLED at",
				"port changes      3   ", "router saw        1 source port(s)", "servers touched   1 of 3",
				"result: as expected: through udpfwd",
			},
		},
		{
			"relay only, 5 servers, 5 roams",
			[]string{"--relay-only", "--servers", "5", "--roams", "5", "--size", "16MiB", "--stall", demoStall},
			[]string{"complete, every byte verified", "port changes      5", "servers touched   1 of 5", "result: as expected"},
		},
		{
			"direct only",
			[]string{"--direct-only", "--size", "16MiB", "--stall", demoStall},
			[]string{"STALLED at", "port changes      1", "servers touched   2 of 3", "result: as expected"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			start := time.Now()
			code := run(tc.args, &out, &errOut)
			t.Logf("in %v:\n%s%s", time.Since(start).Round(time.Millisecond), out.String(), errOut.String())
			if code != 0 {
				t.Fatalf("exit %d, want 0", code)
			}
			for _, want := range tc.want {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q", want)
				}
			}
		})
	}
}

// TestNodesDemo runs warpsim --nodes 3 as its own process (built here): its
// cluster nodes' gRPC goroutines outlive them a while, which the leak
// check of this package's other tests would take for leaks.
func TestNodesDemo(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "warpsim")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build warpsim: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--nodes", "3", "--size", "16MiB", "--stall", demoStall)
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("warpsim --nodes 3: %v", err)
	}
	for _, want := range []string{"complete, every byte verified", "STALLED at", "result: as expected: the cluster kept one session"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
