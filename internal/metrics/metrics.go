// Package metrics exports relays' counters (package stats) and health
// (Status) to Prometheus, with the process's config-reload status
// (Reloads).
//
// The relay counts with atomic adds on its datagram path and never touches a
// Prometheus type there; this package reads those counters only when
// /metrics is scraped. Every metric is named udpfwd_*, and every per-relay
// one is labelled by relay. The set of relays can change at runtime (a
// reload adds or removes relays), so the Collector builds constant metrics
// on each scrape from the relays it holds now rather than registering one
// metric vector per relay.
//
// NewRegistry puts the Collector in a registry of its own, never in
// Prometheus' global one, so that whatever the libraries udpfwd links
// register there (protoactor's OpenTelemetry exporter) stays off /metrics.
package metrics

import (
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/udpfwd/udpfwd/internal/stats"
)

// Namespace prefixes every udpfwd metric name.
const Namespace = "udpfwd"

// Relay is one relay as the Collector sees it: its name, which becomes the
// relay label, its counters, and optionally its Status.
type Relay struct {
	Name     string
	Counters *stats.Counters
	// Status, if not nil, adds the relay's health metrics (udpfwd_up,
	// udpfwd_session_limit, udpfwd_upstream_resolved_info, handshakes,
	// kernel drops, session duration and handshake RTT). Nil exports none
	// of them, rather than zeros that would read as "down".
	Status *Status
}

// eventMetrics names the counter each lifecycle event is exported as, with
// its help text. Indexed by stats.Event; a test checks every event has one.
var eventMetrics = [stats.NumEvents]struct{ name, help string }{
	stats.SessionOpened:   {"sessions_opened_total", "Sessions opened: a client ID was admitted and its upstream socket bound."},
	stats.SessionExpired:  {"sessions_expired_total", "Sessions ended because one direction was silent for the idle timeout."},
	stats.SessionFailed:   {"sessions_failed_total", "Sessions ended because they failed (panicked); other sessions go on."},
	stats.SessionClosed:   {"sessions_closed_total", "Sessions ended by shutdown or by a reload that removed them."},
	stats.ClientRoamed:    {"sessions_roamed_total", "Times a session's replies moved to a new client address: its confirmed address changed."},
	stats.UpstreamChanged: {"upstream_changes_total", "Times the upstream hostname resolved to a new address; new sessions use it."},
}

// Collector is a prometheus.Collector over a changing set of relays. The
// zero value is not ready; use NewCollector. It is safe for concurrent use.
type Collector struct {
	datagrams *prometheus.Desc
	bytes     *prometheus.Desc
	dropped   *prometheus.Desc
	live      *prometheus.Desc
	events    [stats.NumEvents]*prometheus.Desc

	up          *prometheus.Desc
	limit       *prometheus.Desc
	upstream    *prometheus.Desc
	kernelDrops *prometheus.Desc
	handshakes  *prometheus.Desc
	duration    *prometheus.Desc
	rtt         *prometheus.Desc

	endpointUp         *prometheus.Desc
	endpointRTT        *prometheus.Desc
	endpointSessions   *prometheus.Desc
	endpointFailovers  *prometheus.Desc
	endpointHandshakes *prometheus.Desc

	mu     sync.RWMutex
	relays []Relay
}

// NewCollector returns a Collector with no relays.
func NewCollector() *Collector {
	name := func(n string) string { return prometheus.BuildFQName(Namespace, "", n) }
	c := &Collector{
		datagrams: prometheus.NewDesc(name("datagrams_total"),
			"Datagrams moved, by direction: from_client and to_upstream on the way up, from_upstream and to_client on the way back.",
			[]string{"relay", "direction"}, nil),
		bytes: prometheus.NewDesc(name("bytes_total"),
			"UDP payload bytes moved, by direction (as for udpfwd_datagrams_total).",
			[]string{"relay", "direction"}, nil),
		dropped: prometheus.NewDesc(name("dropped_datagrams_total"),
			"Datagrams dropped, by reason; every datagram dropped is counted under exactly one reason.",
			[]string{"relay", "reason"}, nil),
		live: prometheus.NewDesc(name("sessions"),
			"Sessions the relay holds now.",
			[]string{"relay"}, nil),
		up: prometheus.NewDesc(name("up"),
			"1 while the relay runs (its listening sockets bound, its actors alive), else 0.",
			[]string{"relay"}, nil),
		limit: prometheus.NewDesc(name("session_limit"),
			"The most sessions the relay holds at once (max_sessions); compare with udpfwd_sessions.",
			[]string{"relay"}, nil),
		upstream: prometheus.NewDesc(name("upstream_resolved_info"),
			"Always 1, one series per address the upstream resolves to now; none while it has no address.",
			[]string{"relay", "addr"}, nil),
		kernelDrops: prometheus.NewDesc(name("listener_kernel_drops_total"),
			"Datagrams the kernel dropped on a listening socket, mostly because its receive buffer was full (the socket's drop counter).",
			[]string{"relay"}, nil),
		handshakes: prometheus.NewDesc(name("handshakes_total"),
			"Handshakes: initiations forwarded upstream (result=forwarded) and responses from upstream sent back to the client (result=answered).",
			[]string{"relay", "result"}, nil),
		duration: prometheus.NewDesc(name("session_duration_seconds"),
			"How long sessions lived, observed when they end.",
			[]string{"relay"}, nil),
		rtt: prometheus.NewDesc(name("handshake_rtt_seconds"),
			"Time from forwarding a handshake initiation upstream to the upstream's response.",
			[]string{"relay"}, nil),
		endpointUp: prometheus.NewDesc(name("endpoint_up"),
			"1 while an upstream endpoint is up, 0 while it is marked down (failover_after handshake initiations in a row went unanswered).",
			[]string{"relay", "endpoint"}, nil),
		endpointRTT: prometheus.NewDesc(name("endpoint_handshake_rtt_seconds"),
			"An upstream endpoint's smoothed handshake round trip, which new sessions are placed by; 0 before its first answered handshake.",
			[]string{"relay", "endpoint"}, nil),
		endpointSessions: prometheus.NewDesc(name("endpoint_sessions"),
			"Sessions that use an upstream endpoint now.",
			[]string{"relay", "endpoint"}, nil),
		endpointFailovers: prometheus.NewDesc(name("endpoint_failovers_total"),
			"Sessions that moved away from an upstream endpoint that stopped answering their handshakes.",
			[]string{"relay", "endpoint"}, nil),
		endpointHandshakes: prometheus.NewDesc(name("endpoint_handshakes_total"),
			"Handshake initiations an upstream endpoint answered (result=answered), and those its clients retried unanswered (result=unanswered).",
			[]string{"relay", "endpoint", "result"}, nil),
	}
	for e, m := range eventMetrics {
		c.events[e] = prometheus.NewDesc(name(m.name), m.help, []string{"relay"}, nil)
	}
	return c
}

// Set replaces the relays the Collector exports. Relay names must be
// non-empty and unique, and every relay must have counters; otherwise Set
// changes nothing and returns an error. Call it after a reload with the
// relays that run now: a removed relay's series disappear, and a relay
// started again under the same name starts its counters from zero, which
// Prometheus reads as a counter reset.
func (c *Collector) Set(relays []Relay) error {
	seen := make(map[string]bool, len(relays))
	for _, r := range relays {
		switch {
		case r.Name == "":
			return errors.New("metrics: relay without a name")
		case r.Counters == nil:
			return fmt.Errorf("metrics: relay %q has no counters", r.Name)
		case seen[r.Name]:
			return fmt.Errorf("metrics: relay name %q used twice", r.Name)
		}
		seen[r.Name] = true
	}
	rs := append([]Relay(nil), relays...)
	c.mu.Lock()
	c.relays = rs
	c.mu.Unlock()
	return nil
}

// Describe sends the descriptors of every metric the Collector exports; they
// do not depend on the relays, only the label values do.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.datagrams
	ch <- c.bytes
	ch <- c.dropped
	ch <- c.live
	for _, d := range c.events {
		ch <- d
	}
	for _, d := range []*prometheus.Desc{c.up, c.limit, c.upstream, c.kernelDrops, c.handshakes, c.duration, c.rtt,
		c.endpointUp, c.endpointRTT, c.endpointSessions, c.endpointFailovers, c.endpointHandshakes} {
		ch <- d
	}
}

// Collect reads every relay's counters. Every drop reason and every
// direction is exported, zeros included, so that rate() and alerts work
// from the first scrape.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.RLock()
	relays := c.relays
	c.mu.RUnlock()
	for _, r := range relays {
		k := r.Counters
		for d := range stats.NumDirections {
			dir := stats.Direction(d)
			ch <- prometheus.MustNewConstMetric(c.datagrams, prometheus.CounterValue, float64(k.Datagrams(dir)), r.Name, dir.String())
			ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(k.Bytes(dir)), r.Name, dir.String())
		}
		for _, reason := range stats.Reasons() {
			ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(k.Dropped(reason)), r.Name, reason.String())
		}
		ch <- prometheus.MustNewConstMetric(c.live, prometheus.GaugeValue, float64(k.Live()), r.Name)
		for e, d := range c.events {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(k.Events(stats.Event(e))), r.Name)
		}
		if r.Status != nil {
			c.collectStatus(ch, r.Name, r.Status)
		}
	}
}

// collectStatus exports one relay's Status.
func (c *Collector) collectStatus(ch chan<- prometheus.Metric, relay string, s *Status) {
	s.Poll()
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, b2f(s.up.Load()), relay)
	ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(s.limit.Load()), relay)
	for _, a := range s.Upstream() {
		ch <- prometheus.MustNewConstMetric(c.upstream, prometheus.GaugeValue, 1, relay, a.String())
	}
	ch <- prometheus.MustNewConstMetric(c.kernelDrops, prometheus.CounterValue, float64(s.kernelDrops.Load()), relay)
	for r := range numHandshakeResults {
		ch <- prometheus.MustNewConstMetric(c.handshakes, prometheus.CounterValue, float64(s.handshakes[r].Load()), relay, r.String())
	}
	ch <- s.duration.metric(c.duration, sessionDurationBounds, relay)
	ch <- s.rtt.metric(c.rtt, handshakeRTTBounds, relay)
	for _, e := range s.Endpoints() {
		ch <- prometheus.MustNewConstMetric(c.endpointUp, prometheus.GaugeValue, b2f(e.Up), relay, e.Endpoint)
		ch <- prometheus.MustNewConstMetric(c.endpointRTT, prometheus.GaugeValue, e.RTT.Seconds(), relay, e.Endpoint)
		ch <- prometheus.MustNewConstMetric(c.endpointSessions, prometheus.GaugeValue, float64(e.Sessions), relay, e.Endpoint)
		ch <- prometheus.MustNewConstMetric(c.endpointFailovers, prometheus.CounterValue, float64(e.Failovers), relay, e.Endpoint)
		ch <- prometheus.MustNewConstMetric(c.endpointHandshakes, prometheus.CounterValue, float64(e.Answered), relay, e.Endpoint, "answered")
		ch <- prometheus.MustNewConstMetric(c.endpointHandshakes, prometheus.CounterValue, float64(e.Unanswered), relay, e.Endpoint, "unanswered")
	}
}

// NewRegistry returns a new registry, not the global one, holding c, the Go
// runtime and process collectors (go_*, process_*), and udpfwd_build_info
// with the given version.
func NewRegistry(c *Collector, version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace:   Namespace,
		Name:        "build_info",
		Help:        "Always 1; the version label is the running udpfwd's version.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	buildInfo.Set(1)
	reg.MustRegister(
		c,
		buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}
