package metrics_test

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/udpfwd/udpfwd/internal/metrics"
	"github.com/udpfwd/udpfwd/internal/stats"
)

// busy returns counters with a distinct value in every counter, so that a
// value exported under the wrong label or name shows.
func busy() *stats.Counters {
	c := &stats.Counters{}
	c.Move(stats.FromClient, 10, 1000)
	c.Move(stats.ToUpstream, 9, 900)
	c.Move(stats.FromUpstream, 8, 800)
	c.Move(stats.ToClient, 7, 700)
	c.Drop(stats.ZeroClientID, 3)
	c.Drop(stats.UnknownClient, 2)
	for i := range 4 {
		c.Count(stats.SessionOpened)
		if i < 3 {
			c.Count(stats.ClientRoamed)
		}
	}
	c.Count(stats.SessionExpired)
	c.Count(stats.UpstreamChanged)
	c.SetLive(3)
	return c
}

// udpfwdNames are the udpfwd_* metrics a Collector exports.
var udpfwdNames = []string{
	"udpfwd_datagrams_total", "udpfwd_bytes_total", "udpfwd_dropped_datagrams_total", "udpfwd_sessions",
	"udpfwd_sessions_opened_total", "udpfwd_sessions_expired_total", "udpfwd_sessions_failed_total",
	"udpfwd_sessions_closed_total", "udpfwd_sessions_roamed_total", "udpfwd_upstream_changes_total",
}

func TestCollectorValues(t *testing.T) {
	c := metrics.NewCollector()
	if err := c.Set([]metrics.Relay{{Name: "warp", Counters: busy()}}); err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	want.WriteString(`
# HELP udpfwd_bytes_total UDP payload bytes moved, by direction (as for udpfwd_datagrams_total).
# TYPE udpfwd_bytes_total counter
udpfwd_bytes_total{direction="from_client",relay="warp"} 1000
udpfwd_bytes_total{direction="from_upstream",relay="warp"} 800
udpfwd_bytes_total{direction="to_client",relay="warp"} 700
udpfwd_bytes_total{direction="to_upstream",relay="warp"} 900
# HELP udpfwd_datagrams_total Datagrams moved, by direction: from_client and to_upstream on the way up, from_upstream and to_client on the way back.
# TYPE udpfwd_datagrams_total counter
udpfwd_datagrams_total{direction="from_client",relay="warp"} 10
udpfwd_datagrams_total{direction="from_upstream",relay="warp"} 8
udpfwd_datagrams_total{direction="to_client",relay="warp"} 7
udpfwd_datagrams_total{direction="to_upstream",relay="warp"} 9
# HELP udpfwd_dropped_datagrams_total Datagrams dropped, by reason; every datagram dropped is counted under exactly one reason.
# TYPE udpfwd_dropped_datagrams_total counter
`)
	for _, r := range stats.Reasons() {
		n := 0
		switch r {
		case stats.ZeroClientID:
			n = 3
		case stats.UnknownClient:
			n = 2
		}
		fmt.Fprintf(&want, "udpfwd_dropped_datagrams_total{reason=%q,relay=\"warp\"} %d\n", r.String(), n)
	}
	want.WriteString(`
# HELP udpfwd_sessions Sessions the relay holds now.
# TYPE udpfwd_sessions gauge
udpfwd_sessions{relay="warp"} 3
# HELP udpfwd_sessions_closed_total Sessions ended by shutdown or by a reload that removed them.
# TYPE udpfwd_sessions_closed_total counter
udpfwd_sessions_closed_total{relay="warp"} 0
# HELP udpfwd_sessions_expired_total Sessions ended because one direction was silent for the idle timeout.
# TYPE udpfwd_sessions_expired_total counter
udpfwd_sessions_expired_total{relay="warp"} 1
# HELP udpfwd_sessions_failed_total Sessions ended because they failed (panicked); other sessions go on.
# TYPE udpfwd_sessions_failed_total counter
udpfwd_sessions_failed_total{relay="warp"} 0
# HELP udpfwd_sessions_opened_total Sessions opened: a client ID was admitted and its upstream socket bound.
# TYPE udpfwd_sessions_opened_total counter
udpfwd_sessions_opened_total{relay="warp"} 4
# HELP udpfwd_sessions_roamed_total Times a session's replies moved to a new client address: its confirmed address changed.
# TYPE udpfwd_sessions_roamed_total counter
udpfwd_sessions_roamed_total{relay="warp"} 3
# HELP udpfwd_upstream_changes_total Times the upstream hostname resolved to a new address; new sessions use it.
# TYPE udpfwd_upstream_changes_total counter
udpfwd_upstream_changes_total{relay="warp"} 1
`)
	// Names are passed explicitly, so a metric missing from the output fails
	// the comparison rather than being skipped.
	if err := testutil.CollectAndCompare(c, strings.NewReader(want.String()), udpfwdNames...); err != nil {
		t.Error(err)
	}
}

func TestEveryEventAndReasonExported(t *testing.T) {
	c := metrics.NewCollector()
	if err := c.Set([]metrics.Relay{{Name: "a", Counters: &stats.Counters{}}}); err != nil {
		t.Fatal(err)
	}
	// One series per direction (x2 metrics), per reason, per event, and the
	// live gauge, for one relay.
	want := 2*stats.NumDirections + stats.NumReasons + stats.NumEvents + 1
	if got := testutil.CollectAndCount(c); got != want {
		t.Errorf("one relay exports %d series, want %d", got, want)
	}
	if got := testutil.CollectAndCount(c, udpfwdNames...); got != want {
		t.Errorf("the udpfwd_* names listed in this test cover %d series, want %d (a metric is missing from the list)", got, want)
	}
}

func TestLint(t *testing.T) {
	c := metrics.NewCollector()
	st := &metrics.Status{}
	st.SetUpstream(netip.MustParseAddrPort("162.159.192.1:2408"))
	if err := c.Set([]metrics.Relay{{Name: "a", Counters: busy(), Status: st}, {Name: "b", Counters: &stats.Counters{}}}); err != nil {
		t.Fatal(err)
	}
	reg := metrics.NewRegistry(c, "v1.2.3")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	// The registry holds the Go and process collectors and build info too;
	// all of it is linted, not just udpfwd_*.
	for _, n := range append(append([]string{"udpfwd_build_info", "go_goroutines", "process_open_fds"}, udpfwdNames...), statusNames...) {
		if !names[n] {
			t.Errorf("registry lacks %s", n)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestBuildInfo(t *testing.T) {
	reg := metrics.NewRegistry(metrics.NewCollector(), "v1.2.3")
	want := `
# HELP udpfwd_build_info Always 1; the version label is the running udpfwd's version.
# TYPE udpfwd_build_info gauge
udpfwd_build_info{version="v1.2.3"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "udpfwd_build_info"); err != nil {
		t.Error(err)
	}
}

func TestSet(t *testing.T) {
	k := &stats.Counters{}
	tests := []struct {
		name   string
		relays []metrics.Relay
		ok     bool
		series int // series per relay is 2*4+reasons+events+1
	}{
		{name: "none", relays: nil, ok: true, series: 0},
		{name: "two", relays: []metrics.Relay{{Name: "a", Counters: k}, {Name: "b", Counters: &stats.Counters{}}}, ok: true, series: 2},
		{name: "empty name", relays: []metrics.Relay{{Name: "", Counters: k}}},
		{name: "nil counters", relays: []metrics.Relay{{Name: "a", Counters: nil}}},
		{name: "duplicate", relays: []metrics.Relay{{Name: "a", Counters: k}, {Name: "a", Counters: &stats.Counters{}}}},
	}
	perRelay := 2*stats.NumDirections + stats.NumReasons + stats.NumEvents + 1
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := metrics.NewCollector()
			before := []metrics.Relay{{Name: "old", Counters: &stats.Counters{}}}
			if err := c.Set(before); err != nil {
				t.Fatal(err)
			}
			err := c.Set(tt.relays)
			if (err == nil) != tt.ok {
				t.Fatalf("Set: err = %v, want ok = %v", err, tt.ok)
			}
			want := tt.series * perRelay
			if !tt.ok {
				want = perRelay // a refused Set keeps the relays before it
			}
			if got := testutil.CollectAndCount(c); got != want {
				t.Errorf("after Set: %d series, want %d", got, want)
			}
		})
	}
}

// TestSetWhileScraping runs reloads and scrapes at once; run with -race.
func TestSetWhileScraping(t *testing.T) {
	c := metrics.NewCollector()
	reg := metrics.NewRegistry(c, "test")
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 200 {
			rs := []metrics.Relay{{Name: "a", Counters: &stats.Counters{}}}
			if i%2 == 0 {
				rs = append(rs, metrics.Relay{Name: "b", Counters: &stats.Counters{}})
			}
			if err := c.Set(rs); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 50 {
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}
