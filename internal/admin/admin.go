// Package admin is udpfwd's admin HTTP listener: /metrics for Prometheus,
// /healthz for service checks and load balancers, and /sessions, the live
// sessions as JSON (which `udpfwd sessions` prints as a table).
//
// It is off unless an address is configured, and it should listen on
// loopback or a management network only: /sessions shows client addresses.
// The package sees relays only through the Relay interface, so it does not
// depend on the actor packages; actors/relay implements it.
package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/internal/metrics"
	"github.com/udpfwd/udpfwd/internal/stats"
)

// Server timeouts. The admin listener serves small answers to a scraper or
// an operator; these keep a slow or idle client from holding a connection.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
	// DefaultSessionsTimeout bounds how long /sessions waits for one relay
	// to list its sessions.
	DefaultSessionsTimeout = 2 * time.Second
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

// Options configure a Server. The zero value is usable.
type Options struct {
	// Version is the udpfwd_build_info version label.
	Version string
	// Healthy reports whether the process is healthy (every relay running);
	// /healthz answers 200 when it returns nil, else 503 with the error.
	// Nil means always healthy.
	Healthy func() error
	// Logger logs server errors; nil discards them.
	Logger *zap.Logger
	// SessionsTimeout bounds each relay's answer to /sessions; zero means
	// DefaultSessionsTimeout.
	SessionsTimeout time.Duration
	// Now is the clock for the ages in /sessions; nil means time.Now.
	Now func() time.Time
}

// Server is a running admin listener.
type Server struct {
	opts      Options
	log       *zap.Logger
	collector *metrics.Collector
	registry  *prometheus.Registry
	srv       *http.Server
	addr      string
	done      chan struct{}

	mu     sync.RWMutex
	relays []Relay
}

// Start listens on addr ("127.0.0.1:9090"; port 0 picks a free port, see
// Addr) and serves in the background until Shutdown. It exports relays;
// SetRelays changes them later. Binding errors (address in use,
// permission) are returned with the address.
func Start(addr string, relays []Relay, opts Options) (*Server, error) {
	if addr == "" {
		return nil, errors.New("admin listener: no address")
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.SessionsTimeout <= 0 {
		opts.SessionsTimeout = DefaultSessionsTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, log: opts.Logger.Named("admin"), collector: metrics.NewCollector(), done: make(chan struct{})}
	if err := s.SetRelays(relays); err != nil {
		return nil, err
	}
	s.registry = metrics.NewRegistry(s.collector, opts.Version)

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err // drop "listen tcp ADDR:", the address is named below
		}
		return nil, fmt.Errorf("admin listener on %s: %w", addr, err)
	}
	s.addr = ln.Addr().String()
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
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener stopped", zap.Error(err))
		}
	}()
	s.log.Info("admin listener started", zap.String("addr", s.addr))
	return s, nil
}

// handler routes the endpoints. GET patterns also answer HEAD; other
// methods get 405 from the mux.
func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{
		ErrorLog:      zap.NewStdLog(s.log),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /sessions", s.sessions)
	mux.HandleFunc("GET /{$}", index)
	return mux
}

// Addr returns the address the listener is bound to, with the port the
// kernel chose for port 0.
func (s *Server) Addr() string { return s.addr }

// Registry returns the private registry /metrics serves, for registering
// collectors other than the relays'.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// SetRelays replaces the relays /metrics and /sessions show; call it after
// a reload. Names must be unique and non-empty; otherwise nothing changes
// and an error is returned.
func (s *Server) SetRelays(relays []Relay) error {
	mr := make([]metrics.Relay, len(relays))
	for i, r := range relays {
		if r == nil {
			return fmt.Errorf("admin: relay %d is nil", i)
		}
		mr[i] = metrics.Relay{Name: r.Name(), Counters: r.Counters()}
	}
	if err := s.collector.Set(mr); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	rs := append([]Relay(nil), relays...)
	s.mu.Lock()
	s.relays = rs
	s.mu.Unlock()
	return nil
}

func (s *Server) currentRelays() []Relay {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.relays
}

// Shutdown stops accepting connections, waits for requests in flight to
// finish or ctx to end, and then returns; the listener is closed either
// way.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
		err = fmt.Errorf("admin listener shutdown: %w", err)
	}
	<-s.done
	return err
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if s.opts.Healthy != nil {
		if err := s.opts.Healthy(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "unhealthy: %v\n", err)
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

const indexText = `udpfwd admin listener
  /metrics            Prometheus metrics
  /healthz            200 "ok" when every relay runs
  /sessions           live sessions as JSON (?relay=NAME for one relay)
`

func index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, indexText)
}
