package warptest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
)

// socketBuffer is the kernel buffer size asked for on every UDP socket of the
// bed; the default (about 208 KB) overflows under bursts.
const socketBuffer = 4 << 20

// maxRoamTries bounds how many candidate ports Roam opens before giving up.
const maxRoamTries = 64

// StampBind is a conn.Bind on one loopback UDP socket that behaves like a WARP
// client's: it writes a client ID into bytes 1..3 of every datagram it sends
// (wireguard-go has computed the MACs by then, with those bytes zero) and
// zeroes bytes 1..3 of every datagram it receives before wireguard-go parses
// it. With the zero ID it is plain WireGuard's: it sends zeros and leaves
// what it receives as it is, so wireguard-go drops a datagram whose bytes
// 1..3 are not zero, as the Linux kernel does. It can also move to a new
// local port while open ([StampBind.Roam]), keeping the device, its sessions
// and its TCP connections.
type StampBind struct {
	id atomic.Pointer[ClientID]

	mu   sync.Mutex
	sock *net.UDPConn // nil while closed
	gen  uint64       // counts Opens, so a stale ReceiveFunc stops

	sent, received, foreign atomic.Uint64

	fromMu   sync.Mutex
	from     map[netip.AddrPort]uint64 // datagrams received, by source
	lastFrom netip.AddrPort
}

// NewStampBind returns a closed bind that stamps id.
func NewStampBind(id ClientID) *StampBind {
	b := &StampBind{}
	b.SetID(id)
	return b
}

// SetID changes the client ID stamped from now on.
func (b *StampBind) SetID(id ClientID) { b.id.Store(&id) }

// ID returns the client ID being stamped.
func (b *StampBind) ID() ClientID { return *b.id.Load() }

// Sent is the number of datagrams sent since the bind was made.
func (b *StampBind) Sent() uint64 { return b.sent.Load() }

// Received is the number of datagrams received since the bind was made.
func (b *StampBind) Received() uint64 { return b.received.Load() }

// Foreign is the number of received datagrams whose bytes 1..3 were not this
// bind's client ID: a WARP server echoes the ID, so it should stay zero. For
// a plain bind (the zero ID) each of them was dropped by wireguard-go.
func (b *StampBind) Foreign() uint64 { return b.foreign.Load() }

// LocalAddr is the address of the current socket, or the zero AddrPort when
// the bind is closed.
func (b *StampBind) LocalAddr() netip.AddrPort {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sock == nil {
		return netip.AddrPort{}
	}
	return localAddrPort(b.sock)
}

func localAddrPort(c *net.UDPConn) netip.AddrPort {
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func listenLoopback(port uint16) (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port)))
	if err != nil {
		return nil, fmt.Errorf("warptest: listen on 127.0.0.1:%d: %w", port, err)
	}
	// Best effort: a smaller buffer only costs retransmissions.
	_ = c.SetReadBuffer(socketBuffer)
	_ = c.SetWriteBuffer(socketBuffer)
	return c, nil
}

// Open is part of conn.Bind: it listens on 127.0.0.1:port (0 picks a port).
func (b *StampBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sock != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	c, err := listenLoopback(port)
	if err != nil {
		return nil, 0, err
	}
	b.sock = c
	b.gen++
	gen := b.gen
	return []conn.ReceiveFunc{func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		return b.receive(gen, packets, sizes, eps)
	}}, localAddrPort(c).Port(), nil
}

// current returns the socket of open generation gen, or nil if it was closed.
func (b *StampBind) current(gen uint64) *net.UDPConn {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gen != gen {
		return nil
	}
	return b.sock
}

func (b *StampBind) receive(gen uint64, packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	for {
		sock := b.current(gen)
		if sock == nil {
			return 0, net.ErrClosed
		}
		n, from, err := sock.ReadFromUDPAddrPort(packets[0])
		if err != nil {
			if now := b.current(gen); now != nil && now != sock {
				continue // Roam swapped the socket under us.
			}
			if errors.Is(err, net.ErrClosed) {
				return 0, net.ErrClosed
			}
			return 0, fmt.Errorf("warptest: receive: %w", err)
		}
		id, got := b.ID(), ClientID{}
		if id.IsZero() {
			got = peekID(packets[0][:n]) // plain WireGuard: wireguard-go drops it unless zero
		} else {
			got = takeID(packets[0][:n])
		}
		if got != id {
			b.foreign.Add(1)
		}
		b.received.Add(1)
		sizes[0] = n
		src := netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		b.receivedFrom(src)
		eps[0] = addrEndpoint(src)
		return 1, nil
	}
}

// Close is part of conn.Bind; the ReceiveFunc returns net.ErrClosed after it.
func (b *StampBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sock == nil {
		return nil
	}
	err := b.sock.Close()
	b.sock = nil
	b.gen++
	if err != nil {
		return fmt.Errorf("warptest: close bind: %w", err)
	}
	return nil
}

// SetMark is part of conn.Bind; marks do not apply on loopback.
func (b *StampBind) SetMark(uint32) error { return nil }

// BatchSize is part of conn.Bind: one datagram per receive.
func (b *StampBind) BatchSize() int { return 1 }

// ParseEndpoint is part of conn.Bind: s is "ip:port".
func (b *StampBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("warptest: endpoint %q: %w", s, err)
	}
	return addrEndpoint(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())), nil
}

// Send is part of conn.Bind: it stamps the client ID into each datagram, in
// place, and sends it to ep.
func (b *StampBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	dst, ok := ep.(addrEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	id := b.ID()
	for _, buf := range bufs {
		stampID(buf, id)
		if err := b.sendOne(buf, netip.AddrPort(dst)); err != nil {
			return err
		}
		b.sent.Add(1)
	}
	return nil
}

func (b *StampBind) sendOne(buf []byte, dst netip.AddrPort) error {
	for try := 0; ; try++ {
		b.mu.Lock()
		sock := b.sock
		b.mu.Unlock()
		if sock == nil {
			return net.ErrClosed
		}
		_, err := sock.WriteToUDPAddrPort(buf, dst)
		if err == nil {
			return nil
		}
		b.mu.Lock()
		swapped := b.sock != nil && b.sock != sock
		b.mu.Unlock()
		if !swapped || try > 0 {
			return fmt.Errorf("warptest: send to %v: %w", dst, err)
		}
	}
}

// Roam moves the open bind to a new local port, as a phone does when it
// changes networks: it opens sockets on 127.0.0.1:0 until accept (nil accepts
// any) takes one's address, switches to it and closes the old socket. The
// device and its sessions are untouched. It returns the new local address.
func (b *StampBind) Roam(accept func(netip.AddrPort) bool) (netip.AddrPort, error) {
	return b.RoamProbe(func(c *net.UDPConn) bool { return accept == nil || accept(localAddrPort(c)) })
}

// RoamProbe is Roam choosing by probe, which gets each candidate socket
// before the client moves to it and may send from it (say, to learn which
// of several processes sharing a port the kernel hands its datagrams to);
// it accepts the socket by returning true. What probe sends the client
// never sees.
func (b *StampBind) RoamProbe(probe func(*net.UDPConn) bool) (netip.AddrPort, error) {
	for range maxRoamTries {
		c, err := listenLoopback(0)
		if err != nil {
			return netip.AddrPort{}, err
		}
		addr := localAddrPort(c)
		if !probe(c) {
			c.Close()
			continue
		}
		b.mu.Lock()
		old := b.sock
		if old == nil {
			b.mu.Unlock()
			c.Close()
			return netip.AddrPort{}, fmt.Errorf("warptest: roam: %w", net.ErrClosed)
		}
		b.sock = c
		b.mu.Unlock()
		old.Close()
		return addr, nil
	}
	return netip.AddrPort{}, fmt.Errorf("warptest: roam: no acceptable port in %d tries", maxRoamTries)
}

// addrEndpoint is a conn.Endpoint that is just the remote address.
type addrEndpoint netip.AddrPort

func (e addrEndpoint) ClearSrc()           {}
func (e addrEndpoint) SrcToString() string { return "" }
func (e addrEndpoint) DstToString() string { return netip.AddrPort(e).String() }
func (e addrEndpoint) DstToBytes() []byte {
	b, _ := netip.AddrPort(e).MarshalBinary()
	return b
}
func (e addrEndpoint) DstIP() netip.Addr { return netip.AddrPort(e).Addr() }
func (e addrEndpoint) SrcIP() netip.Addr { return netip.Addr{} }

var _ conn.Bind = (*StampBind)(nil)

// receivedFrom counts a datagram received from src.
func (b *StampBind) receivedFrom(src netip.AddrPort) {
	b.fromMu.Lock()
	defer b.fromMu.Unlock()
	if b.from == nil {
		b.from = make(map[netip.AddrPort]uint64)
	}
	b.from[src]++
	b.lastFrom = src
}

// ReceivedFrom returns how many datagrams the bind received from each
// source: which ports of a relay replied.
func (b *StampBind) ReceivedFrom() map[netip.AddrPort]uint64 {
	b.fromMu.Lock()
	defer b.fromMu.Unlock()
	out := make(map[netip.AddrPort]uint64, len(b.from))
	for k, v := range b.from {
		out[k] = v
	}
	return out
}

// LastFrom is the source of the last datagram the bind received.
func (b *StampBind) LastFrom() netip.AddrPort {
	b.fromMu.Lock()
	defer b.fromMu.Unlock()
	return b.lastFrom
}
