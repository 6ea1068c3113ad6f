// Command udpbench measures UDP relays for udpfwd: a batched echo server
// (which can answer handshakes as a WireGuard responder does), a load
// generator of WireGuard-shaped datagrams with per-client WARP client IDs,
// or plain WireGuard's zero ID (throughput with a window in flight, or
// ping-pong latency), the
// kernel's own cost per datagram on this machine, a side-by-side
// comparison of relays started from command templates, and a flood of
// handshake initiations for a relay's admission path. Every run is
// bounded; each prints a table for humans and, as the last line of stdout,
// one JSON object for scripts.
//
// # Independent of the code it measures
//
// udpbench has its own batched socket I/O (batch.go) and its own WireGuard
// framing (wire.go), and does not use internal/udpio, internal/wgproto or
// internal/wgtest, although they do much the same. That is on purpose: a
// load generator should not share the code it measures. Built on udpio, a
// regression there (a slower batch path, a pool that allocates, a batch
// that drops or reorders datagrams) would slow or break the generator and
// the echo server along with udpfwd, and the comparison would hide it; and
// udpbench would not be neutral between udpfwd and the relays it is
// compared with (nginx, socat), which use none of that code. Likewise a
// misreading of the WireGuard header in wgproto, copied into the
// generator's datagrams, would agree with itself and pass unseen. The only
// project package it imports is internal/cli, which reads its command line
// and is not measured.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/udpfwd/udpfwd/internal/cli"
)

const usage = `udpbench: benchmark tool for UDP relays (udpfwd, nginx stream, socat, ...)

Usage:
  udpbench echo    [--listen 127.0.0.1:0] [--duration 0 (until signalled)] [--wg (answer initiations)]
  udpbench gen     [--target HOST:PORT (default: in-process echo)] [--mode throughput|pingpong|both]
                   [--clients 8] [--window 64] [--size 64] [--duration 5s] [--warmup 1s] [--drain 1s]
                   [--public-key BASE64 (mac1 of the handshakes)] [--plain (client ID zero)]
  udpbench limit   [--size 64] [--batch 64] [--duration 2s] [--cpu -1 (every allowed CPU in turn)]
  udpbench compare [--relay NAME | --relay 'NAME=COMMAND TEMPLATE']... [--sizes 64,1392]
                   [--udpfwd-bin udpfwd] [--nginx-bin nginx] [--socat-bin socat] [--duration 5s]
  udpbench relay   --listen HOST:PORT --upstream HOST:PORT   (naive per-datagram relay, a baseline)
  udpbench flood   --target HOST:PORT [--kind initiation|fresh|junk] [--public-key BASE64]
                   [--duration 5s] [--rate 0 (as fast as possible)]   (hostile input for the admission path)

Presets for --relay: udpfwd, nginx, socat, direct (no relay: the bound for any relay), naive,
udpfwd-plain (udpfwd --zero-id track, its clients plain WireGuard; the echo server then answers
handshakes, for every relay of the run).
Template placeholders: {listen} {listen_port}
{upstream} {upstream_port} {dir} {self}. Run "udpbench COMMAND -h" for every flag.
The last line of stdout is always one JSON object (with "error" set on failure).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// errUsage marks command-line mistakes (exit status 2).
var errUsage = errors.New("usage")

// run executes one subcommand and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) (any, error){
		"echo":    cmdEcho,
		"gen":     cmdGen,
		"limit":   cmdLimit,
		"compare": cmdCompare,
		"relay":   cmdRelay,
		"flood":   cmdFlood,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "udpbench: unknown command %q\n\n%s", args[0], usage)
		writeJSON(stdout, map[string]string{"error": fmt.Sprintf("unknown command %q", args[0])})
		return 2
	}
	report, err := cmd(ctx, args[1:], stdout, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "udpbench %s: %v\n", args[0], err)
		if report == nil {
			report = map[string]string{"mode": args[0]}
		}
		writeJSON(stdout, withError(report, err))
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	writeJSON(stdout, report)
	return 0
}

// withError returns report as a JSON object with an "error" field added.
func withError(report any, err error) any {
	b, merr := json.Marshal(report)
	m := map[string]any{}
	if merr != nil || json.Unmarshal(b, &m) != nil {
		m = map[string]any{}
	}
	m["error"] = err.Error()
	return m
}

// writeJSON prints v as one line.
func writeJSON(w io.Writer, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"error": "encoding report: " + err.Error()})
	}
	fmt.Fprintf(w, "%s\n", b)
}

// newFlagSet returns a flag set for the command name (internal/cli, as
// udpfwd's): errors come back to the caller; -h prints the flags on stderr.
func newFlagSet(name string, stderr io.Writer) *pflag.FlagSet {
	fs := cli.NewFlagSet("udpbench " + name)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage of udpbench %s:\n", name)
		cli.PrintFlags(stderr, fs)
	}
	return fs
}

// parseFlags parses args, rejecting positional arguments.
func parseFlags(fs *pflag.FlagSet, args []string) error {
	if err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fs.Usage()
			return err
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

// genFlags registers the generator's flags on fs.
func genFlags(fs *pflag.FlagSet, c *genConfig) {
	fs.IntVar(&c.Clients, "clients", 8, "client sockets, each with its own non-zero client ID")
	fs.IntVar(&c.Window, "window", 64, "datagrams in flight per client in throughput mode")
	fs.IntVar(&c.Batch, "batch", 64, "max datagrams per recvmmsg/sendmmsg")
	fs.DurationVar(&c.Duration, "duration", 5*time.Second, "measured window per run")
	fs.DurationVar(&c.Warmup, "warmup", time.Second, "run before the measured window (not counted)")
	fs.DurationVar(&c.Drain, "drain", time.Second, "max wait for outstanding replies after the window; those never answered are lost")
	fs.DurationVar(&c.LossTimeout, "loss-timeout", time.Second, "a reply later than this: ping-pong counts the datagram lost, throughput refills its window slot")
	fs.IntVar(&c.SockBuf, "sockbuf", defaultSockBuf, "SO_RCVBUF/SO_SNDBUF bytes per socket")
}

// sizesFlag parses "64,208,1392".
func parseSizes(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%w: size %q: %w", errUsage, f, err)
		}
		if err := validateSize(n); err != nil {
			return nil, fmt.Errorf("%w: %w", errUsage, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// sleepCtx waits for d (0 = forever) or ctx.
func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
