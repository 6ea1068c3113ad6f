package monitoring_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/udpfwd/udpfwd/internal/admin"
	"github.com/udpfwd/udpfwd/internal/metrics"
	"github.com/udpfwd/udpfwd/internal/stats"
)

// relay is an admin.Relay with a Status, so that every metric is served.
type relay struct {
	counters stats.Counters
	status   metrics.Status
}

func (r *relay) Name() string                                           { return "warp" }
func (r *relay) Counters() *stats.Counters                              { return &r.counters }
func (r *relay) MetricsStatus() *metrics.Status                         { return &r.status }
func (r *relay) AdminSessions(context.Context) ([]admin.Session, error) { return nil, nil }

// served returns the metric families the admin listener serves, by name.
func served(t *testing.T) map[string]string {
	t.Helper()
	r := &relay{}
	r.status.SetUpstream(netip.MustParseAddrPort("162.159.192.1:2408"))
	r.status.SetEndpoints([]metrics.EndpointStatus{{Endpoint: "162.159.192.1:2408", Up: true}})
	cl := metrics.NewCluster(func() metrics.ClusterStats {
		return metrics.ClusterStats{Members: 2, Peers: []metrics.ClusterPeer{{Peer: "10.0.0.2:7000"}}}
	})
	s, err := admin.Start("127.0.0.1:0", []admin.Relay{r}, admin.Options{Cluster: cl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // generous: only a hang waits it out
		defer cancel()
		s.Shutdown(ctx)
	})
	mfs, err := s.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, mf := range mfs {
		names[mf.GetName()] = mf.GetType().String()
	}
	return names
}

var metricName = regexp.MustCompile(`\b(udpfwd|process|go)_[a-z_]+\b`)

// used returns the metric names in a PromQL expression, a histogram's
// _bucket, _sum and _count series named by their family.
func used(expr string, served map[string]string) []string {
	var names []string
	for _, n := range metricName.FindAllString(expr, -1) {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suffix); ok && served[base] == "HISTOGRAM" {
				n = base
			}
		}
		names = append(names, n)
	}
	return names
}

// checkExpr fails on an expression with unbalanced brackets or quotes,
// the cheap half of a syntax check.
func checkExpr(t *testing.T, where, expr string) {
	t.Helper()
	var stack []rune
	inQuote := false
	for _, c := range expr {
		switch {
		case c == '"':
			inQuote = !inQuote
		case inQuote:
		case c == '(' || c == '{' || c == '[':
			stack = append(stack, c)
		case c == ')' || c == '}' || c == ']':
			open := map[rune]rune{')': '(', '}': '{', ']': '['}[c]
			if len(stack) == 0 || stack[len(stack)-1] != open {
				t.Errorf("%s: unbalanced %q in %s", where, c, expr)
				return
			}
			stack = stack[:len(stack)-1]
		}
	}
	if len(stack) > 0 || inQuote {
		t.Errorf("%s: unclosed bracket or quote in %s", where, expr)
	}
}

func TestDashboardMetricsExist(t *testing.T) {
	names := served(t)
	b, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Annotations struct {
			List []struct {
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			exprs = append(exprs, q.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Definition)
	}
	for _, a := range dash.Annotations.List {
		exprs = append(exprs, a.Expr)
	}
	checkUsed(t, "grafana-dashboard.json", exprs, names)

	// The dashboard covers what it is for.
	all := strings.Join(exprs, "\n")
	for _, n := range []string{"udpfwd_sessions", "udpfwd_session_limit", "udpfwd_datagrams_total", "udpfwd_dropped_datagrams_total",
		"udpfwd_handshake_rtt_seconds_bucket", "udpfwd_up", "udpfwd_upstream_resolved_info", "udpfwd_config_reload_success"} {
		if !strings.Contains(all, n) {
			t.Errorf("the dashboard does not show %s", n)
		}
	}
}

func TestAlertMetricsExist(t *testing.T) {
	names := served(t)
	b, err := os.ReadFile("alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	var exprs, alerts []string
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %q: want alert, expr, a severity label and a summary", r.Alert)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("rule %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			if slices.Contains(alerts, r.Alert) {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			alerts = append(alerts, r.Alert)
			exprs = append(exprs, r.Expr)
		}
	}
	if len(alerts) == 0 {
		t.Fatal("alerts.yaml has no rules")
	}
	checkUsed(t, "alerts.yaml", exprs, names)
}

// checkUsed fails for every metric an expression uses that is not served.
func checkUsed(t *testing.T, file string, exprs []string, served map[string]string) {
	t.Helper()
	n := 0
	for _, e := range exprs {
		checkExpr(t, file, e)
		for _, name := range used(e, served) {
			n++
			if _, ok := served[name]; !ok {
				t.Errorf("%s uses %s, which the admin listener does not serve (in %s)", file, name, e)
			}
		}
	}
	if n == 0 {
		t.Errorf("%s: no metric found in its expressions", file)
	}
}
