package admin_test

import (
	"net/netip"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/udpfwd/udpfwd/internal/admin"
	"github.com/udpfwd/udpfwd/internal/metrics"
	"github.com/udpfwd/udpfwd/internal/stats"
)

// The README's tables are checked against the code here, so that a metric
// or drop reason added, renamed or removed fails a test until the README
// says so too.

// readmeSection returns the README's text from the line that is header
// to the next header of the same or a higher level.
func readmeSection(t *testing.T, header string) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	start := slices.Index(lines, header)
	if start < 0 {
		t.Fatalf("README has no line %q", header)
	}
	level := len(header) - len(strings.TrimLeft(header, "#"))
	end := len(lines)
	for i := start + 1; i < len(lines); i++ {
		l := lines[i]
		if n := len(l) - len(strings.TrimLeft(l, "#")); n > 0 && n <= level && strings.HasPrefix(l[n:], " ") {
			end = i
			break
		}
	}
	return strings.Join(lines[start:end], "\n")
}

// tableColumn returns the first cells of the rows of the Markdown table
// whose header row starts with headerStart, in the text.
func tableColumn(t *testing.T, text, headerStart string) []string {
	t.Helper()
	lines := strings.Split(text, "\n")
	i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, headerStart) })
	if i < 0 {
		t.Fatalf("no table starting %q", headerStart)
	}
	var cells []string
	for _, l := range lines[i+2:] { // skip the header and |---|
		if !strings.HasPrefix(l, "|") {
			break
		}
		cells = append(cells, strings.TrimSpace(strings.Split(l, "|")[1]))
	}
	return cells
}

var backticked = regexp.MustCompile("`([^`]+)`")

func codeSpans(cell string) []string {
	var out []string
	for _, m := range backticked.FindAllStringSubmatch(cell, -1) {
		out = append(out, m[1])
	}
	return out
}

// statusRelay is a relay that reports a Status, so that every metric is
// served.
type statusRelay struct {
	fakeRelay
	status metrics.Status
}

func (s *statusRelay) MetricsStatus() *metrics.Status { return &s.status }

func TestReadmeMetricTable(t *testing.T) {
	r := &statusRelay{fakeRelay: fakeRelay{name: "warp"}}
	r.status.SetUpstream(netip.MustParseAddrPort("162.159.192.1:2408"))
	r.status.SetEndpoints([]metrics.EndpointStatus{{Endpoint: "162.159.192.1:2408", Up: true}})
	cl := metrics.NewCluster(func() metrics.ClusterStats {
		return metrics.ClusterStats{Members: 3, Peers: []metrics.ClusterPeer{{Peer: "10.0.0.2:7000"}}}
	})
	s, _ := start(t, []admin.Relay{r}, admin.Options{Cluster: cl})
	mfs, err := s.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var served []string
	for _, mf := range mfs {
		served = append(served, mf.GetName())
	}

	var documented []string
	for _, cell := range tableColumn(t, readmeSection(t, "### Metrics"), "| Metric |") {
		documented = append(documented, codeSpans(cell)...)
	}
	covers := func(doc, name string) bool {
		ok, err := path.Match(doc, name)
		return err == nil && ok
	}
	for _, name := range served {
		if !slices.ContainsFunc(documented, func(d string) bool { return covers(d, name) }) {
			t.Errorf("/metrics serves %s, which the README's metric table does not list", name)
		}
	}
	for _, d := range documented {
		if !slices.ContainsFunc(served, func(name string) bool { return covers(d, name) }) {
			t.Errorf("the README's metric table lists %s, which /metrics does not serve", d)
		}
	}
	if len(documented) < 10 {
		t.Errorf("found only %d metrics in the README's table: %v", len(documented), documented)
	}
}

func TestReadmeDropReasons(t *testing.T) {
	var documented []string
	for _, cell := range tableColumn(t, readmeSection(t, "### Metrics"), "| Reason |") {
		spans := codeSpans(cell)
		if len(spans) != 1 {
			t.Errorf("drop reason row %q: want one reason in backticks", cell)
			continue
		}
		documented = append(documented, spans[0])
	}
	var exported []string
	for _, r := range stats.Reasons() {
		exported = append(exported, r.String())
		if n := slices.Index(documented, r.String()); n < 0 {
			t.Errorf("drop reason %s is exported but not in the README's table", r)
		}
	}
	for i, d := range documented {
		if !slices.Contains(exported, d) {
			t.Errorf("the README's table lists drop reason %s, which the code does not have", d)
		}
		if slices.Index(documented, d) != i {
			t.Errorf("the README's table lists drop reason %s twice", d)
		}
	}
}

// TestReadmeEndpoints: every endpoint the README's table lists answers
// 200, and the other paths 404, as it says.
func TestReadmeEndpoints(t *testing.T) {
	_, base := start(t, []admin.Relay{&fakeRelay{name: "a"}}, admin.Options{})
	endpoints := tableColumn(t, readmeSection(t, "## Monitoring"), "| Endpoint |")
	var paths []string
	for _, cell := range endpoints {
		for _, span := range codeSpans(cell) {
			method, p, ok := strings.Cut(span, " ")
			if !ok || method != "GET" {
				t.Errorf("endpoint %q: want `GET /path`", span)
				continue
			}
			paths = append(paths, p)
		}
	}
	if !slices.Contains(paths, "/") || len(paths) < 4 {
		t.Fatalf("endpoints %v: want /, /metrics, /healthz, /sessions", paths)
	}
	_, _, index := get(t, "GET", base+"/")
	for _, p := range paths {
		if status, _, body := get(t, "GET", base+p); status != 200 {
			t.Errorf("GET %s: %d %s, the README says it answers", p, status, body)
		}
		if p != "/" && !strings.Contains(index, p) {
			t.Errorf("the index page does not list %s:\n%s", p, index)
		}
	}
	if status, _, _ := get(t, "GET", base+"/nope"); status != 404 {
		t.Errorf("GET /nope: %d, the README says other paths get 404", status)
	}
}
