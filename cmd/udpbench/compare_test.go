package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// compareTestConfig is a short compare of relays built into udpbench: the
// test binary runs itself as the echo server and as the relays.
func compareTestConfig(t *testing.T, relays ...string) compareConfig {
	t.Helper()
	t.Setenv(asMainEnv, "1")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	o := presetOptions{Self: self}
	cfg := compareConfig{
		Sizes: []int{64},
		// The drain ends as soon as every reply is in, and the loss timeout
		// only matters for a datagram that is late: both are generous, so
		// that a busy machine does not make a late reply a lost one.
		Gen: genConfig{Clients: 4, Window: 32, Batch: 32, Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond,
			Drain: waitTimeout, LossTimeout: waitTimeout, SockBuf: defaultSockBuf},
		PingDuration: 200 * time.Millisecond,
		ReadyTimeout: waitTimeout,
		Self:         self,
		Progress:     t.Logf,
	}
	for _, s := range relays {
		r, err := parseRelayFlag(s, o)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Relays = append(cfg.Relays, r)
	}
	return cfg
}

// assertNoChildren fails if any process started by this test is still alive.
func assertNoChildren(t *testing.T) {
	t.Helper()
	all, err := readAllStats("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range descendants(all, os.Getpid()) {
		if p.pid != os.Getpid() && p.state != 'Z' {
			t.Errorf("process %d (%s) left behind", p.pid, p.comm)
		}
	}
}

func TestCompareWithBuiltInRelay(t *testing.T) {
	cfg := compareTestConfig(t, "naive", "copy={self} relay --listen {listen} --upstream {upstream}", "direct")
	cfg.Floor, cfg.FloorTime = true, 150*time.Millisecond
	rep, err := runCompare(context.Background(), cfg)
	assertNoChildren(t)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 3 || rep.Rows[0].Relay != "naive" || rep.Rows[1].Relay != "copy" || rep.Rows[2].Relay != "direct" {
		t.Fatalf("rows %+v: want naive, copy, direct", rep.Rows)
	}
	// The direct row: datagrams flow without a relay, which costs nothing.
	if d := rep.Rows[2]; !d.Direct || d.Error != "" || d.Throughput.Answered == 0 || d.PingPong.Answered == 0 ||
		d.RelayCPUSec != 0 || d.PeakRSSMB != 0 || d.PPSx <= 0 || d.EchoCores <= 0 {
		t.Errorf("direct row %+v: want answers, no relay CPU or RSS, a pps ratio and the echo's CPU", d)
	}
	for _, r := range rep.Rows[:2] {
		tp := r.Throughput
		if r.Error != "" || tp.Answered == 0 || r.PPS <= 0 || r.PingPong.Answered == 0 {
			t.Errorf("%s: error %q, answered %d, ping-pong answered %d: datagrams did not flow", r.Relay, r.Error, tp.Answered, r.PingPong.Answered)
		}
		if tp.Lost != 0 || r.PingPong.Lost != 0 || tp.Foreign+tp.Bad != 0 {
			t.Errorf("%s: lost %d/%d, foreign %d, bad %d: want a clean run", r.Relay, tp.Lost, r.PingPong.Lost, tp.Foreign, tp.Bad)
		}
		if r.RelayCPUSec <= 0 || r.RelayUsPerFwd <= 0 || r.FloorX <= 0 {
			t.Errorf("%s: relay CPU %v s, %v µs/fwd, %vx floor: want > 0", r.Relay, r.RelayCPUSec, r.RelayUsPerFwd, r.FloorX)
		}
		if r.PeakRSSMB <= 0 || r.Procs != 1 {
			t.Errorf("%s: peak RSS %v MB over %d processes: want > 0 over 1", r.Relay, r.PeakRSSMB, r.Procs)
		}
		if r.RTT.P99Us <= 0 || r.RTT.P50Us > r.RTT.P99Us {
			t.Errorf("%s: RTT %+v", r.Relay, r.RTT)
		}
	}
	if f := rep.Rows[0]; f.PPSx != 1 || f.CPUx != 1 || f.P99x != 1 || f.RSSx != 1 {
		t.Errorf("first row's ratios %v %v %v %v, want 1", f.PPSx, f.CPUx, f.P99x, f.RSSx)
	}
	if s := rep.Rows[1]; s.PPSx <= 0 || s.CPUx <= 0 {
		t.Errorf("second row's ratios %v %v, want > 0", s.PPSx, s.CPUx)
	}
	var out strings.Builder
	printCompare(&out, rep)
	for _, want := range []string{"RELAY", "naive", "copy", "Convention:", "kernel floor", "direct: no relay"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestCompareReportsFailingRelays(t *testing.T) {
	cfg := compareTestConfig(t,
		"dies={self} no-such-subcommand",
		"deaf={self} echo --listen 127.0.0.1:0", // listens elsewhere: the probe is never answered
	)
	// The deaf relay costs the whole ready timeout; the echo server must be
	// ready, and the dying relay must exit, within it.
	cfg.ReadyTimeout = 10 * time.Second
	type result struct {
		rep compareReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := runCompare(context.Background(), cfg)
		done <- result{rep, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-time.After(3*cfg.ReadyTimeout + waitTimeout):
		t.Fatal("compare did not return: the ready timeout did not bound the wait")
	}
	rep, err := res.rep, res.err
	assertNoChildren(t)
	if err == nil || !strings.Contains(err.Error(), "2 of 2 relays failed") {
		t.Fatalf("err = %v, want both relays reported failed", err)
	}
	want := map[string]string{"dies": "exited early", "deaf": "not ready"}
	for _, r := range rep.Rows {
		if !strings.Contains(r.Error, want[r.Relay]) {
			t.Errorf("%s: error %q, want it to contain %q", r.Relay, r.Error, want[r.Relay])
		}
		delete(want, r.Relay)
	}
	if len(want) > 0 {
		t.Errorf("no row for %v", want)
	}
}

// --workers expands the udpfwd presets, and only them, into one row per
// worker count; a bad list is refused.
func TestCompareWithWorkers(t *testing.T) {
	o := presetOptions{UdpfwdBin: "udpfwd", NginxBin: "nginx"}
	var relays []relaySpec
	for _, s := range []string{"udpfwd", "nginx", "udpfwd-plain"} {
		r, err := parseRelayFlag(s, o)
		if err != nil {
			t.Fatal(err)
		}
		relays = append(relays, r)
	}
	got, err := withWorkers(relays, "1, 2,auto")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range got {
		names = append(names, r.Name)
		if strings.HasPrefix(r.Name, "udpfwd") && !strings.HasSuffix(r.Template, " --workers "+r.Name[strings.LastIndex(r.Name, "-w")+2:]) {
			t.Errorf("%s runs %q, want its worker count at the end", r.Name, r.Template)
		}
	}
	want := "udpfwd-w1 udpfwd-w2 udpfwd-wauto nginx udpfwd-plain-w1 udpfwd-plain-w2 udpfwd-plain-wauto"
	if strings.Join(names, " ") != want {
		t.Errorf("relays %v, want %s", names, want)
	}
	if same, err := withWorkers(relays, ""); err != nil || len(same) != len(relays) {
		t.Errorf("no --workers: %d relays (%v), want the %d given", len(same), err, len(relays))
	}
	for _, bad := range []string{"0", "two", "1,,2"} {
		if _, err := withWorkers(relays, bad); err == nil {
			t.Errorf("--workers %q accepted", bad)
		}
	}
}
