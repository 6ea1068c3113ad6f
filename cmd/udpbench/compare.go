package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// relaySpec is one relay for `compare`: a command template and, for
// presets that need one, a setup step that writes config files into {dir}.
type relaySpec struct {
	Name     string
	Template string
	setup    func(v templateVars) error
	// Direct runs no relay: the clients talk to the echo server itself.
	// Its row is the most any relay could reach with this generator and
	// echo server on this machine.
	Direct bool
	// Plain clients send client ID zero (clientSet.setPlain): the row of
	// a relay that tracks plain WireGuard clients. With one in the run,
	// the echo server answers initiations with responses (echo --wg), for
	// every row alike.
	Plain bool
}

// presetOptions are the binaries the presets run.
type presetOptions struct {
	UdpfwdBin, NginxBin, SocatBin, Self string
}

// presetNames lists the built-in relays in the order `compare` runs them
// by default (udpfwd first: ratios are against the first relay).
var presetNames = []string{"udpfwd", "nginx", "socat", "direct", "naive", "udpfwd-plain"}

// preset returns the built-in relay called name.
func preset(name string, o presetOptions) (relaySpec, bool) {
	switch name {
	case "udpfwd":
		return relaySpec{Name: name, Template: shellQuote(o.UdpfwdBin) + " -r 127.0.0.1:{listen_port} 127.0.0.1:{upstream_port}"}, true
	case "udpfwd-plain":
		// The same udpfwd, its clients plain WireGuard: what tracking a
		// client by its indexes and address costs next to its client ID.
		return relaySpec{Name: name, Plain: true,
			Template: shellQuote(o.UdpfwdBin) + " -r 127.0.0.1:{listen_port} 127.0.0.1:{upstream_port} --zero-id track"}, true
	case "nginx":
		return relaySpec{
			Name:     name,
			Template: shellQuote(o.NginxBin) + " -c {dir}/nginx.conf -e {dir}/error.log",
			setup: func(v templateVars) error {
				return writeNginxConf(v, filepath.Join(nginxConfDir, "modules-enabled", "*.conf"))
			},
		}, true
	case "socat":
		return relaySpec{Name: name, Template: shellQuote(o.SocatBin) + " -T 600 UDP4-LISTEN:{listen_port},bind=127.0.0.1,fork,reuseaddr UDP4:{upstream}"}, true
	case "naive":
		return relaySpec{Name: name, Template: shellQuote(o.Self) + " relay --listen {listen} --upstream {upstream}"}, true
	case "direct":
		return relaySpec{Name: name, Direct: true}, true
	}
	return relaySpec{}, false
}

var relayNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// parseRelayFlag parses a --relay value: "NAME=TEMPLATE" or a preset name.
func parseRelayFlag(s string, o presetOptions) (relaySpec, error) {
	name, tmpl, hasTemplate := strings.Cut(s, "=")
	name = strings.TrimSpace(name)
	if !relayNameRE.MatchString(name) {
		return relaySpec{}, fmt.Errorf("relay %q: name must match %s", s, relayNameRE)
	}
	if !hasTemplate {
		r, ok := preset(name, o)
		if !ok {
			return relaySpec{}, fmt.Errorf("relay %q: no such preset (presets: %s); give NAME=COMMAND TEMPLATE", name, strings.Join(presetNames, ", "))
		}
		return r, nil
	}
	if strings.TrimSpace(tmpl) == "" {
		return relaySpec{}, fmt.Errorf("relay %q: empty command template", name)
	}
	return relaySpec{Name: name, Template: tmpl}, nil
}

// nginxConfDir is where Debian's nginx keeps its configuration.
const nginxConfDir = "/etc/nginx"

// nginxStreamModuleLines returns the load_module lines for the stream
// module from the files matching pattern (Debian's libnginx-mod-stream puts
// one under /etc/nginx/modules-enabled). None found means the module is
// built in or missing; nginx itself then says which.
func nginxStreamModuleLines(pattern string) ([]string, error) {
	files, err := filepath.Glob(pattern)
	if err != nil {
		return nil, fmt.Errorf("nginx modules: %w", err)
	}
	var lines []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("nginx modules: %w", err)
		}
		for line := range strings.Lines(string(b)) {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "load_module") && strings.Contains(line, "ngx_stream_module") {
				lines = append(lines, line)
			}
		}
	}
	return lines, nil
}

// nginxConf is a one-worker, foreground nginx that proxies UDP from
// v.Listen to v.Upstream; sessions live 10 minutes like udpfwd's. The
// listening socket gets the same 4 MB buffers as udpfwd's (with the
// default 208 KB it drops datagrams at a few hundred in flight); nginx has
// no directive for its per-session upstream sockets.
func nginxConf(v templateVars, loadModules []string) string {
	var b strings.Builder
	b.WriteString("# written by udpbench compare\n")
	for _, l := range loadModules {
		b.WriteString(l + "\n")
	}
	fmt.Fprintf(&b, `daemon off;
master_process off;
worker_processes 1;
pid %s;
error_log %s warn;
events {
    worker_connections 16384;
}
stream {
    server {
        listen %s udp rcvbuf=4m sndbuf=4m;
        proxy_pass %s;
        proxy_timeout 600s;
    }
}
`, filepath.Join(v.Dir, "nginx.pid"), filepath.Join(v.Dir, "error.log"), v.Listen, v.Upstream)
	return b.String()
}

// writeNginxConf writes {dir}/nginx.conf for the nginx preset.
func writeNginxConf(v templateVars, modulesPattern string) error {
	lines, err := nginxStreamModuleLines(modulesPattern)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(v.Dir, "nginx.conf"), []byte(nginxConf(v, lines)), 0o644); err != nil {
		return fmt.Errorf("nginx conf: %w", err)
	}
	return nil
}

// compareConfig is one `udpbench compare`.
type compareConfig struct {
	Relays       []relaySpec
	Sizes        []int
	Gen          genConfig     // Size is set per size
	PingDuration time.Duration // ping-pong measured window
	ReadyTimeout time.Duration
	Floor        bool          // measure the kernel floor first
	FloorTime    time.Duration // how long
	KeepDir      bool
	Self         string // udpbench binary for the echo server and {self}
	Progress     func(format string, args ...any)
}

// compareRow is one relay at one size.
type compareRow struct {
	Relay string `json:"relay"`
	Size  int    `json:"size"`
	Error string `json:"error,omitempty"`

	PPS     float64        `json:"pps"`
	Mbps    float64        `json:"mbps"`
	LossPct float64        `json:"loss_pct"`
	RTT     latencySummary `json:"rtt_pingpong"`

	RelayCPUSec   float64 `json:"relay_cpu_s"`
	RelayCores    float64 `json:"relay_cores"`
	RelayUsPerFwd float64 `json:"relay_us_per_fwd"`
	FloorX        float64 `json:"floor_x,omitempty"`
	PingUsPerFwd  float64 `json:"pingpong_relay_us_per_fwd"`
	PeakRSSMB     float64 `json:"peak_rss_mb"`
	// Direct: no relay ran; the relay's columns are empty.
	Direct        bool    `json:"direct,omitempty"`
	Procs         int     `json:"procs"`
	GenCores      float64 `json:"gen_cores"`
	GenUsPerRT    float64 `json:"gen_us_per_rt"`
	EchoCores     float64 `json:"echo_cores"`
	SoftirqdCores float64 `json:"softirqd_cores"`
	OtherCores    float64 `json:"other_cores"`

	PPSx float64 `json:"pps_x"`
	CPUx float64 `json:"cpu_x"`
	P99x float64 `json:"p99_x"`
	RSSx float64 `json:"rss_x"`

	Warnings   []string  `json:"warnings,omitempty"`
	Throughput runResult `json:"throughput"`
	PingPong   runResult `json:"pingpong"`
}

// compareReport is the JSON last line of `udpbench compare`.
type compareReport struct {
	Mode       string  `json:"mode"`
	Clients    int     `json:"clients"`
	Window     int     `json:"window"`
	Sizes      []int   `json:"sizes"`
	DurationS  float64 `json:"duration_s"`
	PingS      float64 `json:"pingpong_duration_s"`
	Cores      int     `json:"cores"`
	Convention string  `json:"convention"`
	// Floor is the kernel floor at the first size (Floors[0]).
	Floor *limitRow `json:"floor,omitempty"`
	// Floors is the kernel floor at each size: `udpbench limit`'s raw row
	// (batched sendmmsg/recvmmsg, one message per datagram, one thread on
	// one core), measured before and after the relays, the lower kept.
	Floors []limitRow `json:"floors,omitempty"`
	// FloorRuns is every floor measurement: before, then after.
	FloorRuns  []limitRow   `json:"floor_runs,omitempty"`
	FloorNotes []string     `json:"floor_notes,omitempty"`
	Rows       []compareRow `json:"rows"`
}

// measureFloors measures the kernel floor at every size of cfg.
func measureFloors(ctx context.Context, cfg compareConfig, when string) ([]limitRow, error) {
	var rows []limitRow
	for _, size := range cfg.Sizes {
		if ctx.Err() != nil {
			return rows, ctx.Err()
		}
		cfg.Progress("kernel floor %s: %d-byte datagrams, %v ...", when, size, cfg.FloorTime)
		row, err := measureLimit(limitConfig{Size: size, Batch: 64, Duration: cfg.FloorTime, CPU: -1, SockBuf: cfg.Gen.SockBuf}, -1, "raw", 64)
		if err != nil {
			return rows, fmt.Errorf("kernel floor: %w", err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// setFloors keeps, per size, the lower of the floors measured before and
// after the relays (after may be nil), and notes where they disagree.
func (rep *compareReport) setFloors(before, after []limitRow) {
	rep.Floors, rep.FloorRuns, rep.FloorNotes = nil, nil, nil
	rep.FloorRuns = append(append(rep.FloorRuns, before...), after...)
	for i, b := range before {
		f := b
		if i < len(after) {
			a := after[i]
			if a.CPUUsPerDgram < f.CPUUsPerDgram {
				f = a
			}
			lo, hi := min(a.CPUUsPerDgram, b.CPUUsPerDgram), max(a.CPUUsPerDgram, b.CPUUsPerDgram)
			if lo > 0 && hi > 1.2*lo {
				rep.FloorNotes = append(rep.FloorNotes, fmt.Sprintf("%d bytes: the floor measured %.3f µs before the relays and %.3f µs after: the machine or its host was busy during one of them; the lower counts",
					b.Size, b.CPUUsPerDgram, a.CPUUsPerDgram))
			}
		}
		for _, w := range limitWarnings(f) {
			rep.FloorNotes = append(rep.FloorNotes, fmt.Sprintf("%d bytes: %s", f.Size, w))
		}
		rep.Floors = append(rep.Floors, f)
	}
	if len(rep.Floors) > 0 {
		rep.Floor = &rep.Floors[0]
	}
}

// printFloors writes the floor lines of a compare report.
func printFloors(w io.Writer, rep compareReport) {
	for _, f := range rep.Floors {
		fmt.Fprintf(w, "kernel floor: %.3f µs CPU per datagram moved (%d bytes, sendmmsg/recvmmsg, one message per datagram, one pinned core (cpu %d), median of %d slices, %.0f datagrams/s)\n",
			f.CPUUsPerDgram, f.Size, f.CPU, f.Slices, f.PPS)
	}
	for _, n := range rep.FloorNotes {
		fmt.Fprintf(w, "note floor: %s\n", n)
	}
}

// fwdConvention states how CPU per forwarded datagram is counted.
const fwdConvention = "relay CPU = utime+stime (+ reaped children) summed over the relay's process tree during the measured throughput window; " +
	"forwarded datagrams = 2 x datagrams answered in that window (each answered datagram crossed the relay twice: client->upstream and upstream->client); " +
	"pps = datagrams answered per second as seen by the clients"

// probeIndex is the client number whose ID the readiness probe uses: one
// no generator client has (clientIDFor is a bijection).
const probeIndex = maxClients

// freeUDPPort returns a loopback UDP port that was free a moment ago.
func freeUDPPort() (int, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// waitReady probes addr with a handshake-shaped datagram until it is echoed
// back (the relay forwards and the echo server answers), p exits, or
// timeout passes.
func waitReady(ctx context.Context, addr *net.UDPAddr, p *childProc, timeout time.Duration) error {
	c, err := openClient(probeIndex, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, addr, 1, 0, initiationSize)
	if err != nil {
		return err
	}
	defer c.conn.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	go func() {
		select {
		case <-p.exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	err = c.handshake(ctx, time.Now().Add(timeout), nil, false)
	if !p.running() {
		return p.exitError()
	}
	if err != nil {
		return fmt.Errorf("%s not ready on %v within %v: %w; log %s ends:\n%s", p.name, addr, timeout, err, p.logPath, p.logTail(10))
	}
	return nil
}

// checkRelays expands every template once with stand-in addresses and
// checks that its program exists, so a missing binary fails before any run
// (unless the program lives in {dir}, which does not exist yet).
func checkRelays(relays []relaySpec, self string) error {
	seen := map[string]bool{}
	v := templateVars{Listen: "127.0.0.1:1", ListenPort: "1", Upstream: "127.0.0.1:2", UpstreamPort: "2", Dir: "{dir}", Self: self}
	for _, r := range relays {
		if seen[r.Name] {
			return fmt.Errorf("relay %q given twice", r.Name)
		}
		seen[r.Name] = true
		if r.Direct {
			continue
		}
		argv, err := expandTemplate(r.Template, v)
		if err != nil {
			return fmt.Errorf("relay %s: %w", r.Name, err)
		}
		if strings.Contains(argv[0], "{dir}") {
			continue
		}
		if _, err := exec.LookPath(argv[0]); err != nil {
			hint := ""
			switch r.Name {
			case "udpfwd":
				hint = " (build it and pass --udpfwd-bin PATH)"
			case "nginx":
				hint = " (Debian: apt-get install nginx libnginx-mod-stream; or --nginx-bin PATH)"
			case "socat":
				hint = " (Debian: apt-get install socat; or --socat-bin PATH)"
			}
			return fmt.Errorf("relay %s: %w%s", r.Name, err, hint)
		}
	}
	return nil
}

// runCompare runs the same load through every relay and returns one row
// per relay and size. A relay that fails gets a row with Error set; the
// returned error then says how many failed.
func runCompare(ctx context.Context, cfg compareConfig) (compareReport, error) {
	rep := compareReport{Mode: "compare", Clients: cfg.Gen.Clients, Window: cfg.Gen.Window, Sizes: cfg.Sizes,
		DurationS: cfg.Gen.Duration.Seconds(), PingS: cfg.PingDuration.Seconds(), Cores: runtime.NumCPU(), Convention: fwdConvention,
		Rows: []compareRow{}}
	progress := cfg.Progress
	if progress == nil {
		progress = func(string, ...any) {}
	}
	if err := checkRelays(cfg.Relays, cfg.Self); err != nil {
		return rep, fmt.Errorf("%w: %w", errUsage, err) // a template or binary the user gave
	}
	work, err := os.MkdirTemp("", "udpbench-")
	if err != nil {
		return rep, fmt.Errorf("compare: %w", err)
	}
	if cfg.KeepDir {
		progress("keeping %s", work)
	} else {
		defer os.RemoveAll(work)
	}

	var floorsBefore []limitRow
	if cfg.Floor {
		if floorsBefore, err = measureFloors(ctx, cfg, "before the relays"); err != nil {
			return rep, err
		}
		rep.setFloors(floorsBefore, nil)
	}

	echoPort, err := freeUDPPort()
	if err != nil {
		return rep, err
	}
	echoAddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: echoPort}
	echoArgs := []string{cfg.Self, "echo", "--listen", echoAddr.String()}
	if slices.ContainsFunc(cfg.Relays, func(r relaySpec) bool { return r.Plain }) {
		echoArgs = append(echoArgs, "--wg")
	}
	echo, err := startChild("echo", echoArgs, filepath.Join(work, "echo.log"))
	if err != nil {
		return rep, err
	}
	defer echo.stop(2 * time.Second)
	if err := waitReady(ctx, echoAddr, echo, cfg.ReadyTimeout); err != nil {
		return rep, err
	}
	progress("echo server on %v (pid %d)", echoAddr, echo.pid())

	failed := 0
	for _, r := range cfg.Relays {
		rows, err := compareRelay(ctx, cfg, r, work, echo, echoAddr)
		if err != nil {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			failed++
			progress("%s: %v", r.Name, err)
			rows = append(rows, compareRow{Relay: r.Name, Error: err.Error()})
		}
		rep.Rows = append(rep.Rows, rows...)
	}
	if !echo.running() {
		return rep, echo.exitError()
	}
	if cfg.Floor && ctx.Err() == nil {
		// The same figure again, minutes later: a floor disturbed by
		// whatever else ran on the machine (or its host) shows as a
		// difference, and the lower of the two counts.
		after, err := measureFloors(ctx, cfg, "after the relays")
		if err != nil {
			return rep, err
		}
		rep.setFloors(floorsBefore, after)
	}
	addRatios(rep.Rows, rep.Floors)
	addWarnings(rep.Rows, rep.Cores)
	if failed > 0 {
		return rep, fmt.Errorf("%d of %d relays failed", failed, len(cfg.Relays))
	}
	return rep, nil
}

// compareRelay starts relay r, runs every size through it (throughput,
// then ping-pong) and stops it.
func compareRelay(ctx context.Context, cfg compareConfig, r relaySpec, work string, echo *childProc, echoAddr *net.UDPAddr) (rows []compareRow, err error) {
	var proc *childProc // nil for the direct row
	target := echoAddr
	if !r.Direct {
		if proc, target, err = startRelay(ctx, cfg, r, work, echoAddr); err != nil {
			return nil, err
		}
		defer func() {
			if serr := proc.stop(2 * time.Second); serr != nil && err == nil {
				err = serr
			}
		}()
	} else {
		cfg.Progress("%s: no relay, the clients talk to the echo server on %v", r.Name, echoAddr)
	}
	return runSizes(ctx, cfg, r, target, proc, echo)
}

// startRelay writes relay r's files into its directory under work, starts
// it in front of echoAddr and waits until it forwards; it returns the
// process and the address it listens on.
func startRelay(ctx context.Context, cfg compareConfig, r relaySpec, work string, echoAddr *net.UDPAddr) (*childProc, *net.UDPAddr, error) {
	dir := filepath.Join(work, r.Name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", r.Name, err)
	}
	port, err := freeUDPPort()
	if err != nil {
		return nil, nil, err
	}
	listen := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	v := templateVars{Listen: listen.String(), ListenPort: strconv.Itoa(port), Upstream: echoAddr.String(),
		UpstreamPort: strconv.Itoa(echoAddr.Port), Dir: dir, Self: cfg.Self}
	if r.setup != nil {
		if err := r.setup(v); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", r.Name, err)
		}
	}
	argv, err := expandTemplate(r.Template, v)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", r.Name, err)
	}
	cfg.Progress("%s: %s", r.Name, strings.Join(argv, " "))
	proc, err := startChild(r.Name, argv, filepath.Join(dir, "relay.log"))
	if err != nil {
		return nil, nil, err
	}
	if err := waitReady(ctx, listen, proc, cfg.ReadyTimeout); err != nil {
		proc.stop(2 * time.Second)
		return nil, nil, err
	}
	return proc, listen, nil
}

// runSizes runs every size through target (throughput, then ping-pong);
// proc is the relay, nil for the direct row.
func runSizes(ctx context.Context, cfg compareConfig, r relaySpec, target *net.UDPAddr, proc, echo *childProc) (rows []compareRow, err error) {
	maxSize := 0
	for _, s := range cfg.Sizes {
		maxSize = max(maxSize, s)
	}
	cs, err := openClients(target, cfg.Gen.Clients, cfg.Gen.Batch, cfg.Gen.SockBuf, maxSize)
	if err != nil {
		return nil, err
	}
	defer cs.close()
	if r.Plain {
		cs.setPlain(cfg.ReadyTimeout)
	}
	if err := cs.handshake(ctx, cfg.ReadyTimeout); err != nil {
		return nil, fmt.Errorf("%s: %w", r.Name, err)
	}

	for _, size := range cfg.Sizes {
		gc := cfg.Gen
		gc.Size = size
		row := compareRow{Relay: r.Name, Size: size, Direct: r.Direct}

		cfg.Progress("%s: %d bytes, throughput %v ...", r.Name, size, gc.Duration)
		tp, tpCPU, err := sampledRun(ctx, cs, "throughput", gc, proc, echo)
		if err != nil {
			return rows, fmt.Errorf("%s, %d bytes, throughput: %w", r.Name, size, err)
		}
		row.Throughput = tp
		row.PPS, row.Mbps, row.LossPct = tp.PPS, tp.Mbps, tp.LossPct
		row.RelayCPUSec = tpCPU.relay.Seconds()
		row.RelayCores = tpCPU.relay.Seconds() / tp.Seconds
		if tp.Answered > 0 {
			row.RelayUsPerFwd = float64(tpCPU.relay.Nanoseconds()) / 1e3 / float64(2*tp.Answered)
		}
		row.GenCores, row.GenUsPerRT = tp.GenCores, tp.GenUsPerRT
		row.EchoCores = tpCPU.echo.Seconds() / tp.Seconds
		row.SoftirqdCores = tpCPU.softirqd.Seconds() / tp.Seconds
		row.OtherCores = max(0, tp.MachineCores-row.GenCores-row.EchoCores-row.RelayCores-row.SoftirqdCores)

		pc := gc
		pc.Duration = cfg.PingDuration
		cfg.Progress("%s: %d bytes, ping-pong %v ...", r.Name, size, pc.Duration)
		pp, ppCPU, err := sampledRun(ctx, cs, "pingpong", pc, proc, echo)
		if err != nil {
			return rows, fmt.Errorf("%s, %d bytes, ping-pong: %w", r.Name, size, err)
		}
		row.PingPong = pp
		row.RTT = pp.RTT
		if pp.Answered > 0 {
			row.PingUsPerFwd = float64(ppCPU.relay.Nanoseconds()) / 1e3 / float64(2*pp.Answered)
		}
		rows = append(rows, row)
	}
	if proc == nil {
		return rows, nil
	}
	peak, _, err := sampleTrees("/proc", proc.pid())
	if err != nil {
		return rows, fmt.Errorf("%s: %w", r.Name, err)
	}
	for i := range rows {
		rows[i].PeakRSSMB = float64(peak[0].HWMKB) / 1024
		rows[i].Procs = len(peak[0].PIDs)
	}
	return rows, nil
}

// sampledRun runs one generator run and returns the CPU time the relay's
// (nil: none) and the echo server's process trees used during its measured
// window.
func sampledRun(ctx context.Context, cs *clientSet, mode string, gc genConfig, relay, echo *childProc) (runResult, runCPU, error) {
	type snap struct {
		trees    []treeSample
		softirqd time.Duration
	}
	var before, after snap
	var sampleErr error
	sample := func(into *snap) {
		pids := []int{echo.pid()}
		if relay != nil {
			pids = append(pids, relay.pid())
		}
		t, k, err := sampleTrees("/proc", pids...)
		if err != nil && sampleErr == nil {
			sampleErr = err
		}
		*into = snap{t, k}
	}
	res, err := cs.run(ctx, mode, gc, runHooks{start: func() { sample(&before) }, end: func() { sample(&after) }})
	if relay != nil && !relay.running() {
		return res, runCPU{}, relay.exitError()
	}
	if err != nil {
		return res, runCPU{}, err
	}
	if sampleErr != nil {
		return res, runCPU{}, sampleErr
	}
	cpu := runCPU{
		echo:     after.trees[0].CPU - before.trees[0].CPU,
		softirqd: after.softirqd - before.softirqd,
	}
	if relay != nil {
		cpu.relay = after.trees[1].CPU - before.trees[1].CPU
	}
	return res, cpu, nil
}

// runCPU is CPU time used during a run's measured window.
type runCPU struct {
	relay, echo, softirqd time.Duration
}

// addRatios fills the ratio columns against the first relay's row of the
// same size, and each row's multiple of the kernel floor at its size.
func addRatios(rows []compareRow, floors []limitRow) {
	first := map[int]*compareRow{}
	for i := range rows {
		r := &rows[i]
		if r.Error != "" {
			continue
		}
		for _, f := range floors {
			if f.Size == r.Size && f.CPUUsPerDgram > 0 {
				r.FloorX = r.RelayUsPerFwd / f.CPUUsPerDgram
			}
		}
		f, ok := first[r.Size]
		if !ok && r.Direct {
			continue // ratios are against a relay
		}
		if !ok {
			first[r.Size] = r
			f = r
		}
		r.PPSx = ratio(r.PPS, f.PPS)
		r.CPUx = ratio(r.RelayUsPerFwd, f.RelayUsPerFwd)
		r.P99x = ratio(r.RTT.P99Us, f.RTT.P99Us)
		r.RSSx = ratio(r.PeakRSSMB, f.PeakRSSMB)
	}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// addWarnings flags rows whose figures say more about the generator or the
// machine than about the relay.
func addWarnings(rows []compareRow, cores int) {
	for i := range rows {
		r := &rows[i]
		if r.Error != "" {
			continue
		}
		if r.GenCores >= r.RelayCores && !r.Direct {
			r.Warnings = append(r.Warnings, fmt.Sprintf("generator used %.2f cores, the relay %.2f: the generator may bound pps here, compare CPU per datagram instead", r.GenCores, r.RelayCores))
		}
		if total := r.GenCores + r.EchoCores + r.RelayCores; total >= 0.9*float64(cores) {
			r.Warnings = append(r.Warnings, fmt.Sprintf("all %d cores busy (generator %.2f + echo %.2f + relay %.2f): pps is shared with the generator and echo", cores, r.GenCores, r.EchoCores, r.RelayCores))
		}
		if r.SoftirqdCores > 0.05 {
			r.Warnings = append(r.Warnings, fmt.Sprintf("ksoftirqd used %.2f cores: network work the kernel deferred there is charged to no process, so CPU per datagram is understated", r.SoftirqdCores))
		}
		if r.OtherCores > 0.15 {
			r.Warnings = append(r.Warnings, fmt.Sprintf("other processes kept %.2f cores busy during the throughput run: figures are disturbed, rerun on a quiet machine", r.OtherCores))
		}
		tp := r.Throughput
		if tp.Lost > 0 || r.PingPong.Lost > 0 {
			r.Warnings = append(r.Warnings, fmt.Sprintf("loss: throughput %d of %d, ping-pong %d of %d", tp.Lost, tp.Sent, r.PingPong.Lost, r.PingPong.Sent))
		}
		if n := tp.Foreign + r.PingPong.Foreign; n > 0 {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%d replies delivered to the wrong client (another client's ID)", n))
		}
		if n := tp.Bad + tp.Dup + r.PingPong.Bad + r.PingPong.Dup; n > 0 {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%d malformed or duplicate replies", n))
		}
	}
}
