package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
)

// asMainEnv makes the test binary behave as udpbench itself, so compare
// can start it as the echo server and as the naive relay ({self}).
const asMainEnv = "UDPBENCH_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		main()
	}
	os.Exit(m.Run())
}

// runCLI runs udpbench with args and returns its exit status, stdout and
// the decoded last line of stdout.
func runCLI(t *testing.T, args ...string) (int, string, map[string]any) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	out := strings.TrimRight(stdout.String(), "\n")
	last := out[strings.LastIndexByte(out, '\n')+1:]
	var obj map[string]any
	if err := json.Unmarshal([]byte(last), &obj); err != nil {
		t.Fatalf("last line of stdout is not JSON (%v): %q\nstderr: %s", err, last, stderr.String())
	}
	return code, out, obj
}

func TestFlagValidation(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"size not a multiple of 16", []string{"gen", "--size", "100"}, "multiple of 16"},
		{"size too small", []string{"gen", "--size", "16"}, "at least 32"},
		{"zero clients", []string{"gen", "--clients", "0"}, "clients 0"},
		{"too many clients", []string{"gen", "--clients", "5000"}, "clients 5000"},
		{"zero window", []string{"gen", "--window", "0"}, "window 0"},
		{"zero duration", []string{"gen", "--duration", "0s"}, "duration"},
		{"negative warmup", []string{"gen", "--warmup", "-1s"}, "warmup"},
		{"bad mode", []string{"gen", "--mode", "fast"}, "--mode"},
		{"bad target", []string{"gen", "--target", "nowhere"}, "--target"},
		{"positional argument", []string{"gen", "extra"}, "unexpected argument"},
		{"unknown flag", []string{"gen", "--nope"}, "not defined"},
		{"compare bad sizes", []string{"compare", "--sizes", "64,99"}, "multiple of 16"},
		{"compare unknown preset", []string{"compare", "--relay", "haproxy"}, "no such preset"},
		{"compare bad placeholder", []string{"compare", "--relay", "x=cmd {nope}", "--floor=false"}, "unknown placeholder"},
		{"compare missing binary", []string{"compare", "--relay", "udpfwd", "--udpfwd-bin", "/nonexistent/udpfwd", "--floor=false"}, "--udpfwd-bin"},
		{"limit bad size", []string{"limit", "--size", "40"}, "multiple of 16"},
		{"limit bad api", []string{"limit", "--api", "dpdk", "--duration", "1ms"}, "--api"},
		{"relay needs addresses", []string{"relay"}, "required"},
		{"relay bad upstream", []string{"relay", "--listen", "127.0.0.1:0", "--upstream", "x"}, "--upstream"},
		{"echo bad listen", []string{"echo", "--listen", "nope"}, "--listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, obj := runCLI(t, tt.args...)
			if code != 2 {
				t.Fatalf("exit status %d, want 2 (usage)", code)
			}
			msg, _ := obj["error"].(string)
			if !strings.Contains(msg, tt.wantErr) {
				t.Errorf("error %q, want it to contain %q", msg, tt.wantErr)
			}
		})
	}
}

func TestUnknownCommand(t *testing.T) {
	code, _, obj := runCLI(t, "bogus")
	if code != 2 || !strings.Contains(obj["error"].(string), "unknown command") {
		t.Errorf("exit status %d, JSON %v: want 2 and an unknown-command error", code, obj)
	}
}

func TestParseSizes(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []int
		ok   bool
	}{
		{"one", "64", []int{64}, true},
		{"several with spaces", "64, 208,1392", []int{64, 208, 1392}, true},
		{"invalid size", "64,70", nil, false},
		{"not a number", "64,x", nil, false},
		{"empty", "", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSizes(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if tt.ok && !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
