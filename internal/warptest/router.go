package warptest

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// SourceStat is what the router saw of one source address.
type SourceStat struct {
	// Server is the index of the server the source's datagrams were hashed to.
	Server int
	// Datagrams is how many datagrams from the source the router passed on.
	Datagrams uint64
	// ID is the client ID (bytes 1..3) of the source's latest datagram, and
	// Mixed reports that its datagrams did not all carry the same one.
	ID    ClientID
	Mixed bool
}

// Router is the edge's ECMP router: one loopback UDP socket in front of the
// servers, one of the edge's endpoints. It hashes each datagram's 4-tuple (source address and port, router
// address and port) to a server, so one source always reaches the same server
// and a new source port usually reaches another one, and it sends the
// servers' replies back to their sources from the same socket.
type Router struct {
	conn    *net.UDPConn
	addr    netip.AddrPort
	servers []*serverBind

	mu      sync.Mutex
	sources map[netip.AddrPort]*SourceStat
	// swallowed are when the router, dark, swallowed handshake
	// initiations (the first maxSwallowed).
	swallowed []time.Time

	dark    atomic.Bool
	dropped atomic.Uint64
	largest atomic.Int64
	done    chan struct{}
}

// maxSwallowed bounds the times a dark router keeps.
const maxSwallowed = 1024

// packetPool holds buffers for datagrams on their way from the router to a
// server; every datagram of the bed fits.
var packetPool = sync.Pool{New: func() any { return new(packet) }}

type packet struct {
	buf [2048]byte
	n   int
	src netip.AddrPort
	via *Router // the router it came by, which the reply leaves by
}

// newRouter starts a router on addr in front of servers, which it shares
// with the edge's other routers.
func newRouter(addr netip.AddrPort, servers []*serverBind) (*Router, error) {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, fmt.Errorf("warptest: router: %w", err)
	}
	_ = c.SetReadBuffer(socketBuffer)
	_ = c.SetWriteBuffer(socketBuffer)
	r := &Router{
		conn:    c,
		addr:    localAddrPort(c),
		servers: servers,
		sources: make(map[netip.AddrPort]*SourceStat),
		done:    make(chan struct{}),
	}
	go r.run()
	return r, nil
}

// Addr is the router's address: the "WARP endpoint" clients and relays send to.
func (r *Router) Addr() netip.AddrPort { return r.addr }

// Servers is the number of servers behind the router.
func (r *Router) Servers() int { return len(r.servers) }

// ServerFor returns the index of the server that datagrams from src are
// hashed to.
func (r *Router) ServerFor(src netip.AddrPort) int {
	h := fnv.New64a()
	a, _ := src.MarshalBinary()
	h.Write(a)
	b, _ := r.addr.MarshalBinary()
	h.Write(b)
	return int(h.Sum64() % uint64(len(r.servers)))
}

// Sources returns, per source address seen so far, the server it was hashed to
// and how many of its datagrams were passed on.
func (r *Router) Sources() map[netip.AddrPort]SourceStat {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[netip.AddrPort]SourceStat, len(r.sources))
	for k, v := range r.sources {
		out[k] = *v
	}
	return out
}

// ServersTouched returns how many distinct servers have received datagrams.
func (r *Router) ServersTouched() int {
	seen := map[int]bool{}
	for _, s := range r.Sources() {
		seen[s.Server] = true
	}
	return len(seen)
}

// Largest is the size of the largest datagram the router has received. A
// full-size packet makes a transport datagram of the tunnel MTU plus 32 bytes.
func (r *Router) Largest() int { return int(r.largest.Load()) }

// Dropped is the number of datagrams dropped because a server's queue was
// full, as a real network drops them under load.
func (r *Router) Dropped() uint64 { return r.dropped.Load() }

func (r *Router) run() {
	defer close(r.done)
	for {
		p := packetPool.Get().(*packet)
		n, src, err := r.conn.ReadFromUDPAddrPort(p.buf[:])
		if err != nil {
			packetPool.Put(p)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if r.dark.Load() {
			r.swallow(p.buf[:n])
			packetPool.Put(p)
			continue
		}
		if int64(n) > r.largest.Load() {
			r.largest.Store(int64(n))
		}
		p.n = n
		p.src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		p.via = r
		i := r.ServerFor(p.src)
		r.mu.Lock()
		st := r.sources[p.src]
		id := peekID(p.buf[:n])
		if st == nil {
			st = &SourceStat{Server: i, ID: id}
			r.sources[p.src] = st
		}
		st.Datagrams++
		st.Mixed = st.Mixed || st.ID != id
		st.ID = id
		r.mu.Unlock()
		if !r.servers[i].deliver(p) {
			r.dropped.Add(1)
			packetPool.Put(p)
		}
	}
}

// reply sends a server's datagram to dst from the router's socket; a dark
// router sends nothing.
func (r *Router) reply(b []byte, dst netip.AddrPort) error {
	if r.dark.Load() {
		return nil
	}
	_, err := r.conn.WriteToUDPAddrPort(b, dst)
	return err
}

// SetDark makes the router swallow every datagram, both ways, without a
// word (dark) or pass them again: an endpoint that goes dark as a WARP
// address does when it is unreachable from a network. Its socket stays
// open, so senders get no ICMP error either.
func (r *Router) SetDark(dark bool) { r.dark.Store(dark) }

// swallow notes a datagram a dark router swallowed.
func (r *Router) swallow(b []byte) {
	if len(b) == 0 || b[0] != 1 { // only handshake initiations are timed
		return
	}
	r.mu.Lock()
	if len(r.swallowed) < maxSwallowed {
		r.swallowed = append(r.swallowed, time.Now())
	}
	r.mu.Unlock()
}

// Swallowed returns when the router, dark, swallowed handshake initiations,
// oldest first.
func (r *Router) Swallowed() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.swallowed...)
}

func (r *Router) close() {
	r.conn.Close()
	<-r.done
}
