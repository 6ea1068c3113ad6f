package relay

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/udpfwd/udpfwd/internal/admin"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/metrics"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// healthListTimeout bounds asking a forward relay's supervisor whether its
// one forward is still there.
const healthListTimeout = time.Second

// The admin listener reads a relay's health metrics through
// admin.StatusReporter.
var _ admin.StatusReporter = (*Relay)(nil)

// MetricsStatus returns the relay's health record for /metrics: up, the
// session cap, the upstream's address, kernel drops on the listening
// sockets (polled at each scrape), handshakes and their round trip, and
// how long sessions lived.
func (r *Relay) MetricsStatus() *metrics.Status { return &r.status }

// Healthy reports, as one line naming the relay, why the relay cannot do
// its job: it is closed or one of its actors has stopped, a listening
// socket is down (a reload could not bind it), its upstream has no address
// (a hostname that does not resolve), it holds its session cap (new
// clients are refused), or its forward has failed. nil means healthy.
func (r *Relay) Healthy() error {
	var problems []string
	r.mu.RLock()
	pids := []string{}
	if _, ok := r.system.ProcessRegistry.Get(r.supervisor); !ok {
		pids = append(pids, "the supervisor")
	}
	for _, sl := range r.slots {
		if sl == nil {
			continue
		}
		if _, ok := r.system.ProcessRegistry.Get(sl.listener); !ok {
			problems = append(problems, fmt.Sprintf("listener %s is down", sl.conn.LocalAddr()))
		}
		if _, ok := r.system.ProcessRegistry.Get(sl.writer); !ok {
			pids = append(pids, "the writer of "+sl.conn.LocalAddr().String())
		}
	}
	for _, a := range r.missing {
		problems = append(problems, fmt.Sprintf("listener %s is down (not bound)", a))
	}
	cfg := r.cfg
	r.mu.RUnlock()
	if len(pids) > 0 {
		problems = append(problems, strings.Join(pids, " and ")+" stopped")
	}
	switch eps := cfg.Endpoints(); {
	case r.upstreamKnown.Load():
	case len(eps) > 1:
		problems = append(problems, fmt.Sprintf("none of the upstreams %v has an address", eps))
	default:
		problems = append(problems, fmt.Sprintf("upstream %s has no address", cfg.Upstream))
	}
	if cfg.Mode == config.ModeForward {
		if len(pids) == 0 {
			if l, err := r.Sessions(healthListTimeout); err != nil || len(l.Sessions) == 0 {
				problems = append(problems, "its forward has failed")
			}
		}
	} else if limit, live := r.caps.Limit(), r.counters.Live(); limit > 0 && live >= limit {
		problems = append(problems, fmt.Sprintf("at its session cap (%d of %d)", live, limit))
	}
	if len(problems) == 0 {
		return nil
	}
	return errors.New("relay " + r.name + ": " + strings.Join(problems, "; "))
}

// kernelDrops reads the kernel's drop counters of the listening sockets
// when a scrape asks (metrics.Status.SetPoll) and adds what they grew by
// since the last reading. A socket's counter starts at zero; a reload's
// new socket is added, a removed one read one last time and forgotten.
type kernelDrops struct {
	mu   sync.Mutex
	last map[*udpio.Conn]uint32
}

// track starts reading the sockets of slots.
func (k *kernelDrops) track(slots ...*slot) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.last == nil {
		k.last = make(map[*udpio.Conn]uint32)
	}
	for _, sl := range slots {
		k.last[sl.conn] = 0
	}
}

// poll adds to s what every socket's counter grew by. A socket's counter is
// 32 bits and wraps; the difference is taken modulo 2^32.
func (k *kernelDrops) poll(s *metrics.Status, conns ...*udpio.Conn) {
	for _, c := range conns {
		n, err := c.KernelDrops()
		if err != nil {
			continue // closed meanwhile
		}
		if prev, ok := k.last[c]; ok {
			s.AddKernelDrops(uint64(n - prev))
			k.last[c] = n
		}
	}
}

// pollDrops is the relay's Status poll: it reads every listening socket.
func (r *Relay) pollDrops(s *metrics.Status) {
	k := &r.drops
	k.mu.Lock()
	defer k.mu.Unlock()
	conns := make([]*udpio.Conn, 0, len(k.last))
	for c := range k.last {
		conns = append(conns, c)
	}
	k.poll(s, conns...)
}

// untrack reads the sockets of slots one last time, before they close,
// and forgets them.
func (r *Relay) untrack(slots ...*slot) {
	k := &r.drops
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, sl := range slots {
		k.poll(&r.status, sl.conn)
		delete(k.last, sl.conn)
	}
}
