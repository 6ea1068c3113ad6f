package supervisor

import (
	"net/netip"
	"sync"
	"time"

	"github.com/udpfwd/udpfwd/internal/udpio"
)

// Spare upstream sockets. Opening a new session's upstream socket (socket,
// bind on a free port of the range, connect, socket options: a dozen
// system calls) was about half of the supervisor's time per admission, and
// the supervisor is the relay's one shared step: while it dials, every
// datagram waits. So a goroutine of the supervisor's dials a few sockets
// ahead, for the endpoint new sessions last went to, and an admission takes
// one that is ready. The supervisor dials itself only when none is: a
// burst faster than the goroutine, another endpoint, a configuration or
// an upstream address that just changed (the spares dialled for the old
// one are closed), or dialling that failed (the admission then fails as it
// would have, with the error).

// SpareSockets is how many upstream sockets a supervisor keeps dialled
// ahead: a full batch of new clients read at once (udpio.MaxBatch) finds
// one each. They count in the open-file margin the session cap leaves
// (limits.DefaultMaxSessions) and hold ports of upstream_ports.
const SpareSockets = udpio.MaxBatch

// SpareBytes bounds the heap one spare socket holds (udpio.Conn, Go's
// net.UDPConn and its descriptor record, its addresses): measured at about
// 550 bytes. The kernel's side of a socket is not on the heap.
const SpareBytes = 1 << 10

// spareRetry is how long the goroutine waits after a failed dial (no free
// port, no file left) before it tries again: admissions meanwhile dial
// themselves and see the error.
const spareRetry = time.Second

// Spares holds the sockets dialled ahead and runs the goroutine that dials
// them, started on the first refill. The zero value is ready to use. It is
// safe for concurrent use: a relay's workers share one (Config.Spares), so
// that a relay keeps SpareSockets ready however many workers it runs, and a
// restored session on one worker can take its old port back from a spare
// dialled for another.
type Spares struct {
	mu      sync.Mutex
	settled sync.Cond // signalled when a dial of the goroutine's ends
	spec    dialSpec  // what ready was dialled by, and what to dial
	ready   []*udpio.Conn
	dialing bool          // the goroutine is dialling
	retry   time.Time     // no dial before this, after one failed
	wake    chan struct{} // tells the goroutine to fill up; closed by close
	closed  bool
	running sync.WaitGroup
}

// get returns a socket dialled as spec says: a spare if one is ready, else
// one it dials; then it has the goroutine dial more.
func (p *Spares) get(spec dialSpec) (*udpio.Conn, error) {
	defer p.refill()
	if c := p.take(spec); c != nil {
		return c, nil
	}
	c, err := spec.dial()
	if err != nil {
		// The goroutine may have taken the last free port of the range.
		if sc := p.takeSettled(spec); sc != nil {
			return sc, nil
		}
	}
	return c, err
}

// take returns a socket dialled as spec says, or nil if none is ready; the
// goroutine dials for spec from now on. Call refill after it, once the
// caller has dialled itself if it had to, so that the two do not race for
// the last free port of a range.
func (p *Spares) take(spec dialSpec) *udpio.Conn {
	var c *udpio.Conn
	var stale []*udpio.Conn
	p.mu.Lock()
	if spec != p.spec {
		stale, p.ready, p.spec, p.retry = p.ready, nil, spec, time.Time{}
	} else if n := len(p.ready); n > 0 {
		c, p.ready[n-1], p.ready = p.ready[n-1], nil, p.ready[:n-1]
	}
	p.mu.Unlock()
	closeConns(stale)
	return c
}

// takeSettled is take after the goroutine's dial in progress, if any, has
// ended: for a caller whose own dial failed, maybe because the goroutine
// took the last free port.
func (p *Spares) takeSettled(spec dialSpec) *udpio.Conn {
	p.mu.Lock()
	for p.dialing {
		p.settled.Wait()
	}
	p.mu.Unlock()
	return p.take(spec)
}

// refill has the goroutine dial until SpareSockets are ready, starting it
// the first time.
func (p *Spares) refill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if p.wake == nil {
		p.settled.L = &p.mu
		p.wake = make(chan struct{}, 1)
		p.running.Add(1)
		go p.run(p.wake)
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// release closes a ready socket bound to local, if there is one, and
// reports whether there was: a restored session wants its old port back.
func (p *Spares) release(local netip.AddrPort) bool {
	p.mu.Lock()
	for i, c := range p.ready {
		if l := c.LocalAddr(); l.Port() == local.Port() && (l.Addr() == local.Addr() || l.Addr().IsUnspecified() || local.Addr().IsUnspecified()) {
			p.ready = append(p.ready[:i], p.ready[i+1:]...)
			p.mu.Unlock()
			c.Close()
			return true
		}
	}
	p.mu.Unlock()
	return false
}

// len is how many sockets are ready.
func (p *Spares) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready)
}

// Close stops the goroutine, waiting for it, and closes the sockets ready.
// Later admissions dial for themselves.
func (p *Spares) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	ready := p.ready
	p.ready = nil
	if p.wake != nil {
		close(p.wake)
	}
	p.mu.Unlock()
	p.running.Wait()
	closeConns(ready)
}

// run dials until SpareSockets are ready each time it is woken, until wake
// is closed.
func (p *Spares) run(wake <-chan struct{}) {
	defer p.running.Done()
	for range wake {
		for p.fill() {
		}
	}
}

// fill dials one socket if one is wanted, and reports whether another may
// be.
func (p *Spares) fill() bool {
	p.mu.Lock()
	if p.closed || len(p.ready) >= SpareSockets || time.Now().Before(p.retry) {
		p.mu.Unlock()
		return false
	}
	spec := p.spec
	p.dialing = true
	p.mu.Unlock()
	c, err := spec.dial()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dialing = false
	p.settled.Broadcast()
	switch {
	case err != nil:
		if spec == p.spec {
			p.retry = time.Now().Add(spareRetry)
		}
		return false
	case p.closed || spec != p.spec:
		c.Close() // dialled for what is no longer wanted
		return !p.closed
	}
	p.ready = append(p.ready, c)
	return true
}

// closeConns closes cs.
func closeConns(cs []*udpio.Conn) {
	for _, c := range cs {
		c.Close()
	}
}
