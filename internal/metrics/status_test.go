package metrics_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/udpfwd/udpfwd/internal/metrics"
	"github.com/udpfwd/udpfwd/internal/stats"
)

// statusNames are the metrics a relay's Status adds.
var statusNames = []string{
	"udpfwd_up", "udpfwd_session_limit", "udpfwd_upstream_resolved_info", "udpfwd_listener_kernel_drops_total",
	"udpfwd_handshakes_total", "udpfwd_session_duration_seconds", "udpfwd_handshake_rtt_seconds",
}

func TestStatusValues(t *testing.T) {
	s := &metrics.Status{}
	s.SetUp(true)
	s.SetSessionLimit(832)
	// Mapped and duplicate addresses are shown once, as IPv4, sorted.
	s.SetUpstream(netip.MustParseAddrPort("[2606:4700:d0::a29f:c001]:2408"),
		netip.MustParseAddrPort("[::ffff:162.159.192.1]:2408"), netip.MustParseAddrPort("162.159.192.1:2408"))
	s.AddKernelDrops(5)
	s.AddKernelDrops(2)
	s.CountHandshakes(metrics.HandshakeForwarded, 3)
	s.CountHandshakes(metrics.HandshakeAnswered, 2)
	s.ObserveSessionDuration(45 * time.Second)     // in (30s, 60s]
	s.ObserveSessionDuration(time.Minute)          // on the bound: in (30s, 60s]
	s.ObserveSessionDuration(100 * 24 * time.Hour) // +Inf
	s.ObserveHandshakeRTT(20 * time.Millisecond)

	c := metrics.NewCollector()
	if err := c.Set([]metrics.Relay{{Name: "warp", Counters: &stats.Counters{}, Status: s}}); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP udpfwd_handshake_rtt_seconds Time from forwarding a handshake initiation upstream to the upstream's response.
# TYPE udpfwd_handshake_rtt_seconds histogram
udpfwd_handshake_rtt_seconds_bucket{relay="warp",le="0.001"} 0
udpfwd_handshake_rtt_seconds_bucket{relay="warp",le="0.0025"} 0
udpfwd_handshake_rtt_seconds_bucket{relay="warp",le="0.005"} 0
udpfwd_handshake_rtt_seconds_bucket{relay="warp",le="0.01"} 0
udpfwd_handshake_rtt_seconds_bucket{relay="warp",le="0.025"} 1
udpfwd_handshake_rtt_seconds_bucket{relay="warp",le="0.05"} 1
udpfwd_handshake_rtt_seconds_bucket{relay="warp",le="0.1"} 1
udpfwd_handshake_rtt_seconds_bucket{relay="warp",le="0.25"} 1
udpfwd_handshake_rtt_seconds_bucket{relay="warp",le="0.5"} 1
udpfwd_handshake_rtt_seconds_bucket{relay="warp",le="1"} 1
udpfwd_handshake_rtt_seconds_bucket{relay="warp",le="2.5"} 1
udpfwd_handshake_rtt_seconds_bucket{relay="warp",le="5"} 1
udpfwd_handshake_rtt_seconds_bucket{relay="warp",le="+Inf"} 1
udpfwd_handshake_rtt_seconds_sum{relay="warp"} 0.02
udpfwd_handshake_rtt_seconds_count{relay="warp"} 1
# HELP udpfwd_handshakes_total Handshakes: initiations forwarded upstream (result=forwarded) and responses from upstream sent back to the client (result=answered).
# TYPE udpfwd_handshakes_total counter
udpfwd_handshakes_total{relay="warp",result="answered"} 2
udpfwd_handshakes_total{relay="warp",result="forwarded"} 3
# HELP udpfwd_listener_kernel_drops_total Datagrams the kernel dropped on a listening socket, mostly because its receive buffer was full (the socket's drop counter).
# TYPE udpfwd_listener_kernel_drops_total counter
udpfwd_listener_kernel_drops_total{relay="warp"} 7
# HELP udpfwd_session_duration_seconds How long sessions lived, observed when they end.
# TYPE udpfwd_session_duration_seconds histogram
udpfwd_session_duration_seconds_bucket{relay="warp",le="10"} 0
udpfwd_session_duration_seconds_bucket{relay="warp",le="30"} 0
udpfwd_session_duration_seconds_bucket{relay="warp",le="60"} 2
udpfwd_session_duration_seconds_bucket{relay="warp",le="300"} 2
udpfwd_session_duration_seconds_bucket{relay="warp",le="600"} 2
udpfwd_session_duration_seconds_bucket{relay="warp",le="1800"} 2
udpfwd_session_duration_seconds_bucket{relay="warp",le="3600"} 2
udpfwd_session_duration_seconds_bucket{relay="warp",le="10800"} 2
udpfwd_session_duration_seconds_bucket{relay="warp",le="21600"} 2
udpfwd_session_duration_seconds_bucket{relay="warp",le="43200"} 2
udpfwd_session_duration_seconds_bucket{relay="warp",le="86400"} 2
udpfwd_session_duration_seconds_bucket{relay="warp",le="259200"} 2
udpfwd_session_duration_seconds_bucket{relay="warp",le="+Inf"} 3
udpfwd_session_duration_seconds_sum{relay="warp"} 8.640105e+06
udpfwd_session_duration_seconds_count{relay="warp"} 3
# HELP udpfwd_session_limit The most sessions the relay holds at once (max_sessions); compare with udpfwd_sessions.
# TYPE udpfwd_session_limit gauge
udpfwd_session_limit{relay="warp"} 832
# HELP udpfwd_up 1 while the relay runs (its listening sockets bound, its actors alive), else 0.
# TYPE udpfwd_up gauge
udpfwd_up{relay="warp"} 1
# HELP udpfwd_upstream_resolved_info Always 1, one series per address the upstream resolves to now; none while it has no address.
# TYPE udpfwd_upstream_resolved_info gauge
udpfwd_upstream_resolved_info{addr="162.159.192.1:2408",relay="warp"} 1
udpfwd_upstream_resolved_info{addr="[2606:4700:d0::a29f:c001]:2408",relay="warp"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), statusNames...); err != nil {
		t.Error(err)
	}

	// Down, and the upstream stops resolving: its info series go.
	s.SetUp(false)
	s.SetUpstream()
	want = `
# HELP udpfwd_up 1 while the relay runs (its listening sockets bound, its actors alive), else 0.
# TYPE udpfwd_up gauge
udpfwd_up{relay="warp"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "udpfwd_up", "udpfwd_upstream_resolved_info"); err != nil {
		t.Error(err)
	}
}

// A relay without a Status exports none of its metrics: zeros would read
// as "down" and "no cap".
func TestNoStatusNoStatusMetrics(t *testing.T) {
	c := metrics.NewCollector()
	if err := c.Set([]metrics.Relay{{Name: "a", Counters: &stats.Counters{}}, {Name: "b", Counters: &stats.Counters{}, Status: &metrics.Status{}}}); err != nil {
		t.Fatal(err)
	}
	reg := metrics.NewRegistry(c, "test")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "relay" {
					seen[mf.GetName()+"/"+l.GetValue()] = true
				}
			}
		}
	}
	for _, n := range statusNames {
		if n == "udpfwd_upstream_resolved_info" {
			continue // none for b either: its upstream has no address
		}
		if seen[n+"/a"] || !seen[n+"/b"] {
			t.Errorf("%s: exported for a (no Status) %v, for b (Status) %v; want only b", n, seen[n+"/a"], seen[n+"/b"])
		}
	}
}

func TestReloads(t *testing.T) {
	r := metrics.NewReloads()
	want := func(ok int, ts string) string {
		return `
# HELP udpfwd_config_reload_success 1 if the last load of the configuration (at start or on SIGHUP) was applied, 0 if it was refused.
# TYPE udpfwd_config_reload_success gauge
udpfwd_config_reload_success ` + string(rune('0'+ok)) + `
# HELP udpfwd_config_reload_timestamp_seconds Unix time of the last load of the configuration, applied or refused.
# TYPE udpfwd_config_reload_timestamp_seconds gauge
udpfwd_config_reload_timestamp_seconds ` + ts + "\n"
	}
	if err := testutil.CollectAndCompare(r, strings.NewReader(want(0, "0"))); err != nil {
		t.Errorf("before any load: %v", err)
	}
	r.Record(true, time.Unix(1700000000, 500e6))
	if err := testutil.CollectAndCompare(r, strings.NewReader(want(1, "1.7000000005e+09"))); err != nil {
		t.Errorf("after a good load: %v", err)
	}
	r.Record(false, time.Unix(1700000100, 0))
	if err := testutil.CollectAndCompare(r, strings.NewReader(want(0, "1.7000001e+09"))); err != nil {
		t.Errorf("after a refused load: %v", err)
	}
	problems, err := promlint.New(strings.NewReader(want(1, "1"))).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// The calls a relay makes per datagram or per handshake allocate nothing.
func TestStatusAllocs(t *testing.T) {
	s := &metrics.Status{}
	allocs := testing.AllocsPerRun(1000, func() {
		s.CountHandshakes(metrics.HandshakeForwarded, 1)
		s.ObserveHandshakeRTT(3 * time.Millisecond)
		s.ObserveSessionDuration(time.Hour)
		s.AddKernelDrops(1)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per call, want 0", allocs)
	}
}

// A polled counter is read when a scrape comes, not before.
func TestStatusPoll(t *testing.T) {
	s := &metrics.Status{}
	polls := 0
	s.SetPoll(func(st *metrics.Status) {
		polls++
		st.AddKernelDrops(3)
	})
	c := metrics.NewCollector()
	if err := c.Set([]metrics.Relay{{Name: "warp", Counters: &stats.Counters{}, Status: s}}); err != nil {
		t.Fatal(err)
	}
	if polls != 0 {
		t.Fatalf("polled %d times before any scrape", polls)
	}
	want := `
# HELP udpfwd_listener_kernel_drops_total Datagrams the kernel dropped on a listening socket, mostly because its receive buffer was full (the socket's drop counter).
# TYPE udpfwd_listener_kernel_drops_total counter
udpfwd_listener_kernel_drops_total{relay="warp"} 6
`
	testutil.CollectAndCount(c) // the first scrape: 3
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "udpfwd_listener_kernel_drops_total"); err != nil {
		t.Fatal(err)
	}
	s.SetPoll(nil)
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "udpfwd_listener_kernel_drops_total"); err != nil {
		t.Fatalf("after SetPoll(nil): %v", err)
	}
}
