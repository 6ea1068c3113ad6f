// Package admin is udpfwd's admin HTTP listener: /metrics for Prometheus,
// /healthz for service checks and load balancers, and /sessions, the live
// sessions as JSON (which `udpfwd sessions` prints as a table).
//
// It is off unless an address is configured, and it should listen on
// loopback or a management network only: /sessions shows client addresses.
// Whatever reaches it, it cannot take the relay down with it: it holds at
// most MaxConns connections (MaxFiles descriptors in all, which the session
// cap leaves room for), times out slow and idle clients, answers only
// requests addressed to its own address or a loopback name (a defence
// against DNS rebinding), can require a bearer token for /sessions, and
// serves /sessions from a snapshot that each relay is asked for at most
// once per SnapshotInterval, however many requests arrive.
//
// The package sees relays only through the Relay interface, so it does not
// depend on the actor packages; actors/relay implements it.
package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/net/netutil"

	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/metrics"
	"github.com/udpfwd/udpfwd/internal/stats"
)

// Server timeouts and sizes. The admin listener serves small answers to a
// scraper or an operator; these keep a slow or idle client from holding one
// of its few connections.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 30 * time.Second
	maxHeaderBytes    = 8 << 10
	// DefaultSessionsTimeout bounds how long building one relay's /sessions
	// snapshot may take.
	DefaultSessionsTimeout = 2 * time.Second
	// DefaultSnapshotInterval is how often, at most, each relay is asked
	// for its sessions: requests within it share one snapshot, so a loop of
	// curl costs the relay one listing a second, not one per request.
	DefaultSnapshotInterval = time.Second
)

// File descriptors. The listener holds at most DefaultMaxConns connections
// at once (more wait in the kernel's accept queue, which costs no
// descriptor), serves at most maxScrapesInFlight /metrics requests at once
// (others get 503), and each scrape reads /proc one file at a time (the
// process collector).
const (
	// DefaultMaxConns is the connection cap, and the most Options.MaxConns
	// may be: a few scrapers and operators need a handful; 64 leaves room for
	// keep-alive connections without letting idle ones use up the process's
	// open files (1 000 of them once starved new sessions of sockets).
	DefaultMaxConns = 64
	// maxScrapesInFlight bounds concurrent /metrics requests.
	maxScrapesInFlight = 4
	// MaxFiles is the most file descriptors the admin listener uses: its
	// listening socket, DefaultMaxConns connections and one /proc file per
	// scrape in flight. It is limits.AdminFiles, which the session cap's
	// default margin includes; a test checks that the caps above add up to
	// it.
	MaxFiles = limits.AdminFiles
)

// Relay is what the admin listener needs of one relay.
type Relay interface {
	// Name is the relay's name: the relay label and the ?relay= value.
	Name() string
	// Counters are the relay's counters, exported on /metrics.
	Counters() *stats.Counters
	// AdminSessions lists the relay's live sessions, within ctx's deadline.
	AdminSessions(ctx context.Context) ([]Session, error)
}

// StatusReporter is implemented by a Relay that also reports its health
// (up, session limit, upstream addresses, handshakes, ...) for /metrics.
// The listener exports those metrics only for relays that implement it.
type StatusReporter interface {
	MetricsStatus() *metrics.Status
}

// Options configure a Server. The zero value is usable: no token, loopback
// names and the listener's own address only, the default caps.
type Options struct {
	// Version is the udpfwd_build_info version label.
	Version string
	// Healthy reports whether the process is healthy (every relay
	// running, its upstream resolved, below its session cap); /healthz
	// answers 200 when it returns nil, else 503 with the error, one line of
	// it per failing relay (errors.Join of one error per relay). Nil means
	// always healthy.
	Healthy func() error
	// Logger logs server errors; nil discards them.
	Logger *zap.Logger
	// SessionsTimeout bounds each relay's answer to /sessions; zero means
	// DefaultSessionsTimeout.
	SessionsTimeout time.Duration
	// SnapshotInterval is how long one relay's /sessions snapshot is
	// served before the relay is asked again; zero means
	// DefaultSnapshotInterval.
	SnapshotInterval time.Duration
	// Now is the clock for the ages in /sessions and the snapshots' age;
	// nil means time.Now.
	Now func() time.Time

	// MaxConns caps the connections held at once, 1..DefaultMaxConns; zero
	// means DefaultMaxConns.
	MaxConns int
	// AllowedHosts are further names (or IP addresses) a request's Host
	// header may carry, port ignored, for a listener reached through a DNS
	// name (a Prometheus target "relay1.example.net:9090"). "*" allows any
	// Host. Without them only the listener's own address and loopback names
	// (localhost, 127.0.0.1, [::1]) are answered: a web page that rebinds
	// its own name to this address cannot read it.
	AllowedHosts []string
	// Token, if set, is the bearer token /sessions requires
	// ("Authorization: Bearer TOKEN"); /metrics, /healthz and / stay open.
	// ReadTokenFile reads it from a file.
	Token string
	// Reloads holds the config-reload metrics; nil means the Server keeps
	// its own, marked as one successful load at Start.
	Reloads *metrics.Reloads
	// Cluster, if set, exports the process's cluster node (udpfwd_cluster_*).
	Cluster *metrics.Cluster
}

// Validate reports options out of range.
func (o Options) Validate() error {
	switch {
	case o.MaxConns < 0 || o.MaxConns > DefaultMaxConns:
		return fmt.Errorf("admin listener: connection cap %d: want 1..%d", o.MaxConns, DefaultMaxConns)
	case o.SessionsTimeout < 0:
		return fmt.Errorf("admin listener: sessions timeout %v is negative", o.SessionsTimeout)
	case o.SnapshotInterval < 0:
		return fmt.Errorf("admin listener: snapshot interval %v is negative", o.SnapshotInterval)
	}
	for _, h := range o.AllowedHosts {
		if h == "" {
			return errors.New("admin listener: an empty allowed host")
		}
	}
	if err := validToken(o.Token); err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	return nil
}

// Server is a running admin listener.
type Server struct {
	opts      Options
	log       *zap.Logger
	collector *metrics.Collector
	registry  *prometheus.Registry
	srv       *http.Server
	addr      string
	hosts     hostPolicy
	done      chan struct{}

	mu     sync.RWMutex
	relays []Relay

	snaps snapshots
}

// Start listens on addr ("127.0.0.1:9090"; port 0 picks a free port, see
// Addr) and serves in the background until Shutdown. It exports relays;
// SetRelays changes them later. Binding errors (address in use,
// permission) are returned with the address.
func Start(addr string, relays []Relay, opts Options) (*Server, error) {
	if addr == "" {
		return nil, errors.New("admin listener: no address")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.SessionsTimeout == 0 {
		opts.SessionsTimeout = DefaultSessionsTimeout
	}
	if opts.SnapshotInterval == 0 {
		opts.SnapshotInterval = DefaultSnapshotInterval
	}
	if opts.MaxConns == 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Reloads == nil {
		opts.Reloads = metrics.NewReloads()
		opts.Reloads.Record(true, time.Now())
	}
	s := &Server{opts: opts, log: opts.Logger.Named("admin"), collector: metrics.NewCollector(), done: make(chan struct{})}
	s.snaps.init()
	if err := s.SetRelays(relays); err != nil {
		return nil, err
	}
	s.registry = metrics.NewRegistry(s.collector, opts.Version)
	s.registry.MustRegister(opts.Reloads)
	if opts.Cluster != nil {
		s.registry.MustRegister(opts.Cluster)
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err // drop "listen tcp ADDR:", the address is named below
		}
		return nil, fmt.Errorf("admin listener on %s: %w", addr, err)
	}
	s.addr = ln.Addr().String()
	s.hosts = newHostPolicy(ln.Addr(), opts.AllowedHosts)
	errLog, err := zap.NewStdLogAt(s.log, zap.WarnLevel)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	s.srv = &http.Server{
		Handler:           s.handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          errLog,
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(netutil.LimitListener(ln, opts.MaxConns)); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener stopped", zap.Error(err))
		}
	}()
	s.log.Info("admin listener started", zap.String("addr", s.addr))
	return s, nil
}

// handler routes the endpoints behind the Host check. GET patterns also
// answer HEAD; other methods get 405 from the mux.
func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{
		ErrorLog:            zap.NewStdLog(s.log),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: maxScrapesInFlight,
	}))
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("GET /sessions", s.requireToken(http.HandlerFunc(s.sessions)))
	mux.HandleFunc("GET /{$}", index)
	return s.checkHost(mux)
}

// Addr returns the address the listener is bound to, with the port the
// kernel chose for port 0.
func (s *Server) Addr() string { return s.addr }

// Registry returns the private registry /metrics serves, for registering
// collectors other than the relays'.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// Reloads returns the config-reload metrics /metrics serves (Options.Reloads
// or the Server's own), for the daemon to record each reload in.
func (s *Server) Reloads() *metrics.Reloads { return s.opts.Reloads }

// SetRelays replaces the relays /metrics and /sessions show; call it after
// a reload. Names must be unique and non-empty; otherwise nothing changes
// and an error is returned. Cached /sessions snapshots are dropped.
func (s *Server) SetRelays(relays []Relay) error {
	mr := make([]metrics.Relay, len(relays))
	for i, r := range relays {
		if r == nil {
			return fmt.Errorf("admin: relay %d is nil", i)
		}
		mr[i] = metrics.Relay{Name: r.Name(), Counters: r.Counters()}
		if sr, ok := r.(StatusReporter); ok {
			mr[i].Status = sr.MetricsStatus()
		}
	}
	if err := s.collector.Set(mr); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	rs := append([]Relay(nil), relays...)
	s.mu.Lock()
	s.relays = rs
	s.mu.Unlock()
	s.snaps.reset()
	return nil
}

func (s *Server) currentRelays() []Relay {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.relays
}

// Shutdown stops accepting connections, waits for requests in flight to
// finish or ctx to end, and then returns; the listener is closed either
// way, and snapshots being built are cancelled and waited for.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
		err = fmt.Errorf("admin listener shutdown: %w", err)
	}
	<-s.done
	s.snaps.close()
	return err
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if s.opts.Healthy != nil {
		if err := s.opts.Healthy(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, line := range strings.Split(err.Error(), "\n") {
				fmt.Fprintf(w, "unhealthy: %s\n", line)
			}
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

const indexText = `udpfwd admin listener
  /metrics            Prometheus metrics
  /healthz            200 "ok" when every relay runs, else 503 and one line per failing relay
  /sessions           live sessions (and static forwards) as JSON: ?relay=NAME for one relay,
                      ?limit=N&after=KEY for a page (the reply's "next" is the next page);
                      needs "Authorization: Bearer TOKEN" if a token is set
`

func index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, indexText)
}
