package metrics

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// HandshakeResult labels udpfwd_handshakes_total.
type HandshakeResult uint8

// Handshake results. Names are stable: they become metric label values.
const (
	// HandshakeForwarded is a handshake initiation sent upstream.
	HandshakeForwarded HandshakeResult = iota
	// HandshakeAnswered is a handshake response from upstream sent back
	// to the client.
	HandshakeAnswered
	numHandshakeResults
)

var handshakeResultNames = [numHandshakeResults]string{"forwarded", "answered"}

// String is the result's label value: "forwarded" or "answered".
func (r HandshakeResult) String() string {
	if r < numHandshakeResults {
		return handshakeResultNames[r]
	}
	return "unknown"
}

// Histogram bucket bounds. Sessions live from seconds (a client that gives
// up) to days; a handshake crosses the relay and the upstream in a few to a
// few hundred milliseconds, and WireGuard retries after 5 s.
var (
	sessionDurationBounds = []time.Duration{
		10 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute, 10 * time.Minute, 30 * time.Minute,
		time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour, 72 * time.Hour,
	}
	handshakeRTTBounds = []time.Duration{
		time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
		25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
		500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second,
	}
)

// maxBuckets bounds the bounds lists above.
const maxBuckets = 16

// histogram counts durations into fixed buckets with atomic adds: no lock
// and no allocation per observation. Its zero value is ready.
type histogram struct {
	counts   [maxBuckets + 1]atomic.Uint64 // counts[i]: in (bounds[i-1], bounds[i]]; the last is +Inf
	sumNanos atomic.Int64
}

func (h *histogram) observe(bounds []time.Duration, d time.Duration) {
	i := 0
	for i < len(bounds) && d > bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNanos.Add(int64(d))
}

// metric exports h under desc with label values lvs.
func (h *histogram) metric(desc *prometheus.Desc, bounds []time.Duration, lvs ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(bounds))
	var cum uint64
	for i, b := range bounds {
		cum += h.counts[i].Load()
		buckets[b.Seconds()] = cum
	}
	cum += h.counts[len(bounds)].Load()
	return prometheus.MustNewConstHistogram(desc, cum, time.Duration(h.sumNanos.Load()).Seconds(), buckets, lvs...)
}

// Status is what a relay reports about its health beyond its counters:
// whether it runs, its session cap, where its upstream resolves to, the
// kernel's drops on its listening sockets, its handshakes, and how long
// its sessions live. The relay writes it; /metrics reads it. The zero value
// is ready (down, no cap, no upstream address); every method is safe for
// concurrent use, and the ones the datagram path calls (CountHandshakes,
// ObserveHandshakeRTT, AddKernelDrops) are atomic adds that allocate
// nothing.
type Status struct {
	up          atomic.Bool
	limit       atomic.Int64
	kernelDrops atomic.Uint64
	handshakes  [numHandshakeResults]atomic.Uint64
	duration    histogram
	rtt         histogram

	mu        sync.Mutex
	upstream  []netip.AddrPort
	endpoints []EndpointStatus
	poll      func(*Status)
}

// EndpointStatus is one upstream endpoint's health, as the relay's pool
// (internal/pool) keeps it from the handshakes its sessions forward.
type EndpointStatus struct {
	// Endpoint is the endpoint as configured, "host:port": the endpoint
	// label.
	Endpoint string
	// Up is false while the endpoint is marked down.
	Up bool
	// RTT is its smoothed handshake round trip; 0 before the first sample.
	RTT time.Duration
	// Sessions are the sessions that use it now.
	Sessions int
	// Answered and Unanswered count its handshake initiations answered and
	// retried unanswered; Failovers the sessions that moved away from it.
	Answered, Unanswered, Failovers uint64
}

// SetEndpoints records the relay's upstream endpoints' health, replacing
// what was recorded: the relay's supervisor calls it when it changes (a
// handshake, a session opened, ended or moved), never per datagram.
func (s *Status) SetEndpoints(eps []EndpointStatus) {
	eps = slices.Clone(eps)
	s.mu.Lock()
	s.endpoints = eps
	s.mu.Unlock()
}

// Endpoints returns what SetEndpoints recorded last.
func (s *Status) Endpoints() []EndpointStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.endpoints)
}

// SetPoll makes every scrape call f before it reads the Status, so that
// counters the relay polls rather than counts (the kernel's drops on its
// listening sockets) are read when someone looks, at no cost to the
// datagram path. f runs on the scraper's goroutine and may call the Status'
// setters; nil removes it.
func (s *Status) SetPoll(f func(*Status)) {
	s.mu.Lock()
	s.poll = f
	s.mu.Unlock()
}

// Poll calls the function SetPoll set, if any. The collector calls it
// before each scrape reads the Status.
func (s *Status) Poll() {
	s.mu.Lock()
	f := s.poll
	s.mu.Unlock()
	if f != nil {
		f(s)
	}
}

// SetUp records whether the relay runs: its listening sockets are bound and
// its actors alive.
func (s *Status) SetUp(up bool) { s.up.Store(up) }

// SetSessionLimit records the relay's session cap (max_sessions).
func (s *Status) SetSessionLimit(n int) { s.limit.Store(int64(n)) }

// SetUpstream records the addresses the upstream resolves to now; none
// while it does not resolve.
func (s *Status) SetUpstream(addrs ...netip.AddrPort) {
	a := make([]netip.AddrPort, len(addrs))
	for i, x := range addrs {
		a[i] = netip.AddrPortFrom(x.Addr().Unmap(), x.Port())
	}
	slices.SortFunc(a, func(x, y netip.AddrPort) int { return x.Compare(y) })
	a = slices.Compact(a)
	s.mu.Lock()
	s.upstream = a
	s.mu.Unlock()
}

// Upstream returns the addresses SetUpstream recorded last.
func (s *Status) Upstream() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.upstream)
}

// AddKernelDrops counts n datagrams the kernel dropped on a listening
// socket because its receive buffer was full (the socket's drop counter
// grew by n).
func (s *Status) AddKernelDrops(n uint64) { s.kernelDrops.Add(n) }

// CountHandshakes counts n handshakes with result r.
func (s *Status) CountHandshakes(r HandshakeResult, n int) { s.handshakes[r].Add(uint64(n)) }

// ObserveSessionDuration records how long a session lived, when it ends.
func (s *Status) ObserveSessionDuration(d time.Duration) {
	s.duration.observe(sessionDurationBounds, d)
}

// ObserveHandshakeRTT records the time from forwarding a handshake
// initiation upstream to the upstream's response.
func (s *Status) ObserveHandshakeRTT(d time.Duration) { s.rtt.observe(handshakeRTTBounds, d) }

// Reloads is the config file's load status, a prometheus.Collector:
// udpfwd_config_reload_success and udpfwd_config_reload_timestamp_seconds.
// Safe for concurrent use; NewReloads makes one.
type Reloads struct {
	success atomic.Bool
	at      atomic.Int64 // unix nanoseconds of the last attempt; 0: none yet

	successDesc *prometheus.Desc
	atDesc      *prometheus.Desc
}

// NewReloads returns Reloads with no load recorded yet (success 0,
// timestamp 0).
func NewReloads() *Reloads {
	name := func(n string) string { return prometheus.BuildFQName(Namespace, "", n) }
	return &Reloads{
		successDesc: prometheus.NewDesc(name("config_reload_success"),
			"1 if the last load of the configuration (at start or on SIGHUP) was applied, 0 if it was refused.", nil, nil),
		atDesc: prometheus.NewDesc(name("config_reload_timestamp_seconds"),
			"Unix time of the last load of the configuration, applied or refused.", nil, nil),
	}
}

// Record records one load of the configuration at t: applied (ok) or
// refused.
func (r *Reloads) Record(ok bool, t time.Time) {
	r.success.Store(ok)
	r.at.Store(t.UnixNano())
}

// Describe implements prometheus.Collector.
func (r *Reloads) Describe(ch chan<- *prometheus.Desc) {
	ch <- r.successDesc
	ch <- r.atDesc
}

// Collect implements prometheus.Collector.
func (r *Reloads) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(r.successDesc, prometheus.GaugeValue, b2f(r.success.Load()))
	ch <- prometheus.MustNewConstMetric(r.atDesc, prometheus.GaugeValue, float64(r.at.Load())/1e9)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
