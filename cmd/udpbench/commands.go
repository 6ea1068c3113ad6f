package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

func cmdEcho(ctx context.Context, args []string, stdout, stderr io.Writer) (any, error) {
	fs := newFlagSet("echo", stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	duration := fs.Duration("duration", 0, "stop after this long (0: run until SIGINT/SIGTERM)")
	batch := fs.Int("batch", 64, "max datagrams per recvmmsg/sendmmsg")
	sockBuf := fs.Int("sockbuf", defaultSockBuf, "SO_RCVBUF/SO_SNDBUF bytes")
	wg := fs.Bool("wg", false, "answer handshake initiations with handshake responses carrying a fresh sender index, as a WireGuard responder does (for a relay that tracks plain clients by it)")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if *batch < 1 || *batch > 1024 || *duration < 0 {
		return nil, fmt.Errorf("%w: --batch 1..1024 and --duration >= 0", errUsage)
	}
	if err := checkAddr("--listen", *listen); err != nil {
		return nil, err
	}
	e, err := startEchoServer(*listen, *sockBuf, *batch, *wg)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "udpbench echo: listening on %v\n", e.addr())
	t0, cpu0 := time.Now(), selfCPU()
	sleepCtx(ctx, *duration)
	serr := e.close()
	rep := e.report(time.Since(t0), selfCPU()-cpu0)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SECONDS\tRECEIVED\tSENT\tSEND DROPS\tCPU s")
	fmt.Fprintf(tw, "%.2f\t%d\t%d\t%d\t%.2f\n", rep.Seconds, rep.Received, rep.Sent, rep.SendDrops, rep.CPUSec)
	tw.Flush()
	return rep, serr
}

func cmdRelay(ctx context.Context, args []string, stdout, stderr io.Writer) (any, error) {
	fs := newFlagSet("relay", stderr)
	listen := fs.String("listen", "", "address to listen on (host:port)")
	upstream := fs.String("upstream", "", "address to forward to (host:port)")
	duration := fs.Duration("duration", 0, "stop after this long (0: run until SIGINT/SIGTERM)")
	sockBuf := fs.Int("sockbuf", defaultSockBuf, "SO_RCVBUF/SO_SNDBUF bytes")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if *listen == "" || *upstream == "" {
		return nil, fmt.Errorf("%w: --listen and --upstream are required", errUsage)
	}
	if err := checkAddr("--listen", *listen); err != nil {
		return nil, err
	}
	if err := checkAddr("--upstream", *upstream); err != nil {
		return nil, err
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	fmt.Fprintf(stdout, "udpbench relay: %s -> %s\n", *listen, *upstream)
	err := runNaiveRelay(ctx, *listen, *upstream, *sockBuf)
	return map[string]string{"mode": "relay", "listen": *listen, "upstream": *upstream}, err
}

// checkAddr reports an address flag that is not host:port as a usage error.
func checkAddr(flag, addr string) error {
	if _, err := net.ResolveUDPAddr("udp", addr); err != nil {
		return fmt.Errorf("%w: %s: %w", errUsage, flag, err)
	}
	return nil
}

// genReport is the JSON last line of `udpbench gen`.
type genReport struct {
	Mode          string      `json:"mode"`
	Target        string      `json:"target"`
	InProcessEcho bool        `json:"in_process_echo"`
	Runs          []runResult `json:"runs"`
	Warnings      []string    `json:"warnings,omitempty"`
}

func cmdGen(ctx context.Context, args []string, stdout, stderr io.Writer) (any, error) {
	fs := newFlagSet("gen", stderr)
	var cfg genConfig
	genFlags(fs, &cfg)
	fs.IntVar(&cfg.Size, "size", 64, "transport datagram size (>= 32, a multiple of 16)")
	target := fs.String("target", "", "relay or echo address host:port (default: start an in-process echo server)")
	mode := fs.String("mode", "throughput", "throughput, pingpong or both")
	hsTimeout := fs.Duration("handshake-timeout", 5*time.Second, "max wait for each client's handshake-shaped datagram to come back")
	pub := fs.String("public-key", "", "give handshake initiations a mac1 valid for this `BASE64` key (a relay's --upstream-public-key)")
	plain := fs.Bool("plain", false, "send client ID zero, as plain WireGuard does (a relay with --zero-id track); transports carry the index the upstream's handshake response assigned")
	wgEcho := fs.Bool("wg-echo", false, "the in-process echo server answers initiations with responses (echo --wg)")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	var mac1 *[32]byte
	if *pub != "" {
		k, err := mac1Key(*pub)
		if err != nil {
			return nil, fmt.Errorf("%w: --public-key: %w", errUsage, err)
		}
		mac1 = &k
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	var modes []string
	switch *mode {
	case "throughput", "pingpong":
		modes = []string{*mode}
	case "both":
		modes = []string{"throughput", "pingpong"}
	default:
		return nil, fmt.Errorf("%w: --mode %q: want throughput, pingpong or both", errUsage, *mode)
	}
	rep := genReport{Mode: "gen", InProcessEcho: *target == ""}
	var taddr *net.UDPAddr
	if *target == "" {
		e, err := startEchoServer("127.0.0.1:0", cfg.SockBuf, cfg.Batch, *wgEcho)
		if err != nil {
			return nil, err
		}
		defer e.close()
		taddr = e.addr()
	} else {
		var err error
		if taddr, err = net.ResolveUDPAddr("udp", *target); err != nil {
			return nil, fmt.Errorf("%w: --target: %w", errUsage, err)
		}
	}
	rep.Target = taddr.String()
	cs, err := openClients(taddr, cfg.Clients, cfg.Batch, cfg.SockBuf, cfg.Size)
	if err != nil {
		return rep, err
	}
	defer cs.close()
	cs.mac1 = mac1
	if *plain {
		cs.setPlain(*hsTimeout)
	}
	if err := cs.handshake(ctx, *hsTimeout); err != nil {
		return rep, err
	}
	for _, m := range modes {
		fmt.Fprintf(stderr, "udpbench gen: %s, %d clients, %d bytes, %v after %v warm-up ...\n", m, cfg.Clients, cfg.Size, cfg.Duration, cfg.Warmup)
		res, err := cs.run(ctx, m, cfg, runHooks{})
		if err != nil {
			return rep, err
		}
		rep.Runs = append(rep.Runs, res)
	}
	cores := float64(min(runtime.NumCPU(), runtime.GOMAXPROCS(0)))
	for _, r := range rep.Runs {
		if other := r.MachineCores - r.GenCores; rep.InProcessEcho && other > 0.15 {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: other processes kept %.2f cores busy during the run: figures are disturbed", r.Mode, other))
		}
		if r.GenCores >= 0.9*cores {
			what := "the generator"
			if rep.InProcessEcho {
				what = "the generator and its in-process echo"
			}
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: %s used %.2f of %.0f cores: the figures measure %s, not the target", r.Mode, what, r.GenCores, cores, what))
		}
	}
	printGen(stdout, rep)
	return rep, nil
}

func printGen(w io.Writer, rep genReport) {
	echo := ""
	if rep.InProcessEcho {
		echo = " (in-process echo; generator CPU includes it)"
	}
	fmt.Fprintf(w, "udpbench gen -> %s%s\n", rep.Target, echo)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "MODE\tCLIENTS\tWINDOW\tSIZE\tSECONDS\tPPS\tMBIT/S\tLOSS %\tRTT p50 µs\tp90\tp99\tp99.9\tGEN CORES\tGEN µs/RT\t")
	for _, r := range rep.Runs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.2f\t%.0f\t%.1f\t%.3f\t%.1f\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\t\n",
			r.Mode, r.Clients, r.Window, r.Size, r.Seconds, r.PPS, r.Mbps, r.LossPct,
			r.RTT.P50Us, r.RTT.P90Us, r.RTT.P99Us, r.RTT.P999Us, r.GenCores, r.GenUsPerRT)
	}
	tw.Flush()
	fmt.Fprintln(w, "pps = datagrams answered per second; Mbit/s = answered UDP payload; loss = sent in the window, never answered after the drain")
	for _, r := range rep.Runs {
		if r.Dup+r.Bad+r.Foreign+r.Stale+r.Late+r.Stalls+r.Refused > 0 {
			fmt.Fprintf(w, "%s: dup %d, bad %d, foreign %d, stale %d, late %d, stalls %d, refused %d\n", r.Mode, r.Dup, r.Bad, r.Foreign, r.Stale, r.Late, r.Stalls, r.Refused)
		}
	}
	for _, s := range rep.Warnings {
		fmt.Fprintf(w, "WARNING: %s\n", s)
	}
}

func cmdLimit(ctx context.Context, args []string, stdout, stderr io.Writer) (any, error) {
	fs := newFlagSet("limit", stderr)
	var cfg limitConfig
	fs.IntVar(&cfg.Size, "size", 64, "datagram size")
	fs.IntVar(&cfg.Batch, "batch", 64, "datagrams per sendmmsg/recvmmsg")
	fs.DurationVar(&cfg.Duration, "duration", 2*time.Second, "measured time per row")
	fs.IntVar(&cfg.CPU, "cpu", -1, "CPU to pin the thread to (-1: every allowed CPU in turns; the quietest counts)")
	fs.IntVar(&cfg.SockBuf, "sockbuf", defaultSockBuf, "SO_RCVBUF/SO_SNDBUF bytes")
	apis := fs.String("api", limitAPIs, limitAPIsHelp)
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if err := validateSize(cfg.Size); err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	if cfg.Batch < 1 || cfg.Batch > 1024 || cfg.Duration <= 0 {
		return nil, fmt.Errorf("%w: --batch 1..1024 and --duration > 0", errUsage)
	}
	return runLimit(ctx, cfg, *apis, stdout, stderr)
}

// relayList collects repeated --relay flags.
type relayList struct {
	values []string
}

func (r *relayList) String() string     { return strings.Join(r.values, " ") }
func (r *relayList) Set(s string) error { r.values = append(r.values, s); return nil }
func (r *relayList) Type() string       { return "string" }

func cmdCompare(ctx context.Context, args []string, stdout, stderr io.Writer) (any, error) {
	fs := newFlagSet("compare", stderr)
	var cfg compareConfig
	genFlags(fs, &cfg.Gen)
	var relays relayList
	fs.Var(&relays, "relay", "relay to run: a preset name ("+strings.Join(presetNames, ", ")+") or 'NAME=COMMAND TEMPLATE'; repeatable; ratios are against the first (default: udpfwd, nginx, socat, direct)")
	var po presetOptions
	fs.StringVar(&po.UdpfwdBin, "udpfwd-bin", "udpfwd", "udpfwd binary for the udpfwd preset")
	fs.StringVar(&po.NginxBin, "nginx-bin", "nginx", "nginx binary for the nginx preset")
	fs.StringVar(&po.SocatBin, "socat-bin", "socat", "socat binary for the socat preset")
	sizes := fs.String("sizes", "64,1392", "transport datagram sizes, comma-separated")
	fs.DurationVar(&cfg.PingDuration, "pingpong-duration", 3*time.Second, "measured ping-pong window per size")
	fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", 10*time.Second, "max wait for a relay to echo the readiness probe")
	fs.BoolVar(&cfg.Floor, "floor", true, "measure the kernel floor first and show each relay's CPU as a multiple of it")
	fs.DurationVar(&cfg.FloorTime, "floor-duration", 2*time.Second, "how long to measure the kernel floor")
	fs.BoolVar(&cfg.KeepDir, "keep", false, "keep the temporary directory (configs and relay logs)")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	var err error
	if cfg.Sizes, err = parseSizes(*sizes); err != nil {
		return nil, err
	}
	cfg.Gen.Size = cfg.Sizes[0]
	if err := cfg.Gen.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	if cfg.PingDuration <= 0 || cfg.ReadyTimeout <= 0 || (cfg.Floor && cfg.FloorTime <= 0) {
		return nil, fmt.Errorf("%w: --pingpong-duration, --ready-timeout and --floor-duration must be > 0", errUsage)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("compare: locating udpbench itself: %w", err)
	}
	cfg.Self, po.Self = self, self
	if len(relays.values) == 0 {
		relays.values = []string{"udpfwd", "nginx", "socat", "direct"}
	}
	for _, s := range relays.values {
		r, err := parseRelayFlag(s, po)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errUsage, err)
		}
		cfg.Relays = append(cfg.Relays, r)
	}
	cfg.Progress = func(format string, a ...any) { fmt.Fprintf(stderr, "udpbench compare: "+format+"\n", a...) }
	rep, err := runCompare(ctx, cfg)
	printCompare(stdout, rep)
	return rep, err
}

func printCompare(w io.Writer, rep compareReport) {
	if len(rep.Rows) == 0 {
		return
	}
	fmt.Fprintf(w, "udpbench compare: %d clients x %d in flight, throughput %.0f s and ping-pong %.0f s per size, %d cores shared by generator, echo and relay\n",
		rep.Clients, rep.Window, rep.DurationS, rep.PingS, rep.Cores)
	printFloors(w, rep)
	first := ""
	for _, r := range rep.Rows {
		if r.Error == "" && !r.Direct {
			first = r.Relay
			break
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "RELAY\tSIZE\tPPS\tMBIT/S\tLOSS %%\tRTT p50 µs\tp90\tp99\tp99.9\tCPU µs/FWD\tx FLOOR\tPEAK RSS MB\tGEN CORES\tPPS x\tCPU x\tp99 x\tRSS x\t\n")
	for _, r := range rep.Rows {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t-\tFAILED\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\n", r.Relay)
			continue
		}
		floorX := "-"
		if r.FloorX > 0 {
			floorX = fmt.Sprintf("%.1f", r.FloorX)
		}
		cpu, rss, cpuX, rssX := fmt.Sprintf("%.2f", r.RelayUsPerFwd), fmt.Sprintf("%.1f", r.PeakRSSMB), fmt.Sprintf("%.2f", r.CPUx), fmt.Sprintf("%.2f", r.RSSx)
		if r.Direct { // no relay: nothing of its own to show
			cpu, rss, cpuX, rssX = "-", "-", "-", "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.1f\t%.3f\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t%s\t%s\t%.2f\t%.2f\t%s\t%.2f\t%s\t\n",
			r.Relay, r.Size, r.PPS, r.Mbps, r.LossPct, r.RTT.P50Us, r.RTT.P90Us, r.RTT.P99Us, r.RTT.P999Us,
			cpu, floorX, rss, r.GenCores, r.PPSx, cpuX, r.P99x, rssX)
	}
	tw.Flush()
	fmt.Fprintf(w, "PPS, MBIT/S, LOSS, CPU, GEN CORES: throughput run; RTT: ping-pong run (1 in flight per client). Ratios (x) are against %s at the same size.\n", first)
	for _, r := range rep.Rows {
		if r.Direct && r.Error == "" {
			fmt.Fprintf(w, "%s: no relay, the clients talk to the echo server: the most any relay could reach with this generator and echo on this machine.\n", r.Relay)
			break
		}
	}
	fmt.Fprintf(w, "Convention: %s.\n", rep.Convention)
	for _, r := range rep.Rows {
		if r.Error != "" {
			fmt.Fprintf(w, "%s FAILED: %s\n", r.Relay, firstLine(r.Error))
		}
		for _, s := range r.Warnings {
			fmt.Fprintf(w, "note %s/%d: %s\n", r.Relay, r.Size, s)
		}
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
