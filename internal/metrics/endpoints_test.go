package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/udpfwd/udpfwd/internal/metrics"
	"github.com/udpfwd/udpfwd/internal/stats"
)

// Each upstream endpoint of a relay's pool is a series of its own, labelled
// by the endpoint as configured; the values are the last ones recorded.
func TestEndpointMetrics(t *testing.T) {
	s := &metrics.Status{}
	s.SetEndpoints([]metrics.EndpointStatus{{Endpoint: "a.example:2408", Up: true}})
	eps := []metrics.EndpointStatus{
		{Endpoint: "162.159.192.1:2408", Up: false, Sessions: 0, Answered: 3, Unanswered: 4, Failovers: 2},
		{Endpoint: "[2606:4700:d0::a29f:c001]:2408", Up: true, RTT: 25 * time.Millisecond, Sessions: 2, Answered: 7},
	}
	s.SetEndpoints(eps)
	eps[0].Sessions = 99 // the Status holds its own copy
	c := metrics.NewCollector()
	if err := c.Set([]metrics.Relay{{Name: "warp", Counters: &stats.Counters{}, Status: s}}); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP udpfwd_endpoint_failovers_total Sessions that moved away from an upstream endpoint that stopped answering their handshakes.
# TYPE udpfwd_endpoint_failovers_total counter
udpfwd_endpoint_failovers_total{endpoint="162.159.192.1:2408",relay="warp"} 2
udpfwd_endpoint_failovers_total{endpoint="[2606:4700:d0::a29f:c001]:2408",relay="warp"} 0
# HELP udpfwd_endpoint_handshake_rtt_seconds An upstream endpoint's smoothed handshake round trip, which new sessions are placed by; 0 before its first answered handshake.
# TYPE udpfwd_endpoint_handshake_rtt_seconds gauge
udpfwd_endpoint_handshake_rtt_seconds{endpoint="162.159.192.1:2408",relay="warp"} 0
udpfwd_endpoint_handshake_rtt_seconds{endpoint="[2606:4700:d0::a29f:c001]:2408",relay="warp"} 0.025
# HELP udpfwd_endpoint_handshakes_total Handshake initiations an upstream endpoint answered (result=answered), and those its clients retried unanswered (result=unanswered).
# TYPE udpfwd_endpoint_handshakes_total counter
udpfwd_endpoint_handshakes_total{endpoint="162.159.192.1:2408",relay="warp",result="answered"} 3
udpfwd_endpoint_handshakes_total{endpoint="162.159.192.1:2408",relay="warp",result="unanswered"} 4
udpfwd_endpoint_handshakes_total{endpoint="[2606:4700:d0::a29f:c001]:2408",relay="warp",result="answered"} 7
udpfwd_endpoint_handshakes_total{endpoint="[2606:4700:d0::a29f:c001]:2408",relay="warp",result="unanswered"} 0
# HELP udpfwd_endpoint_sessions Sessions that use an upstream endpoint now.
# TYPE udpfwd_endpoint_sessions gauge
udpfwd_endpoint_sessions{endpoint="162.159.192.1:2408",relay="warp"} 0
udpfwd_endpoint_sessions{endpoint="[2606:4700:d0::a29f:c001]:2408",relay="warp"} 2
# HELP udpfwd_endpoint_up 1 while an upstream endpoint is up, 0 while it is marked down (failover_after handshake initiations in a row went unanswered).
# TYPE udpfwd_endpoint_up gauge
udpfwd_endpoint_up{endpoint="162.159.192.1:2408",relay="warp"} 0
udpfwd_endpoint_up{endpoint="[2606:4700:d0::a29f:c001]:2408",relay="warp"} 1
`
	names := []string{"udpfwd_endpoint_up", "udpfwd_endpoint_handshake_rtt_seconds", "udpfwd_endpoint_sessions",
		"udpfwd_endpoint_failovers_total", "udpfwd_endpoint_handshakes_total"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	problems, err := promlint.New(strings.NewReader(want)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
