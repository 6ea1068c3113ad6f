package warptest

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.zx2c4.com/wireguard/conn"
)

// serverBatch is how many datagrams a server's bind hands wireguard-go at once.
const serverBatch = 32

// serverBind is the conn.Bind of one edge server. It has no socket of its own:
// the routers hand it the datagrams hashed to it, and it sends replies through
// the socket of the router each came by. Like a WARP server it takes the client ID out of bytes
// 1..3 before wireguard-go parses a datagram and writes it back into the
// replies (the ID rides in the endpoint wireguard-go keeps for the peer).
type serverBind struct {
	index int
	in    chan *packet

	mu   sync.Mutex
	done chan struct{} // closed by Close; nil while closed
}

func newServerBind(index int) *serverBind {
	return &serverBind{index: index, in: make(chan *packet, 4096)}
}

// deliver queues p for the server; false if the queue is full.
func (b *serverBind) deliver(p *packet) bool {
	select {
	case b.in <- p:
		return true
	default:
		return false
	}
}

func (b *serverBind) Open(uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	done := make(chan struct{})
	b.done = done
	return []conn.ReceiveFunc{func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		return b.receive(done, packets, sizes, eps)
	}}, uint16(b.index + 1), nil
}

func (b *serverBind) receive(done chan struct{}, packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	var p *packet
	select {
	case p = <-b.in:
	case <-done:
		return 0, net.ErrClosed
	}
	n := 0
	for {
		data := packets[n][:copy(packets[n], p.buf[:p.n])]
		id := takeID(data)
		sizes[n] = len(data)
		eps[n] = &serverEndpoint{src: p.src, id: id, via: p.via}
		packetPool.Put(p)
		n++
		if n == len(packets) {
			return n, nil
		}
		select {
		case p = <-b.in:
		default:
			return n, nil
		}
	}
}

func (b *serverBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done != nil {
		close(b.done)
		b.done = nil
	}
	return nil
}

func (b *serverBind) SetMark(uint32) error { return nil }

func (b *serverBind) BatchSize() int { return serverBatch }

func (b *serverBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("warptest: endpoint %q: %w", s, err)
	}
	return &serverEndpoint{src: ap}, nil
}

func (b *serverBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*serverEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	for _, buf := range bufs {
		stampID(buf, e.id)
		if e.via == nil {
			return fmt.Errorf("warptest: server %d: no router to reply to %v by", b.index, e.src)
		}
		if err := e.via.reply(buf, e.src); err != nil {
			return fmt.Errorf("warptest: server %d reply to %v: %w", b.index, e.src, err)
		}
	}
	return nil
}

// serverEndpoint is where a datagram came from, the client ID it carried
// and the router (endpoint) it came by, which replies leave by.
type serverEndpoint struct {
	src netip.AddrPort
	id  ClientID
	via *Router
}

func (e *serverEndpoint) ClearSrc()           {}
func (e *serverEndpoint) SrcToString() string { return "" }
func (e *serverEndpoint) DstToString() string { return e.src.String() }
func (e *serverEndpoint) DstToBytes() []byte {
	b, _ := e.src.MarshalBinary()
	return b
}
func (e *serverEndpoint) DstIP() netip.Addr { return e.src.Addr() }
func (e *serverEndpoint) SrcIP() netip.Addr { return netip.Addr{} }

var _ conn.Bind = (*serverBind)(nil)
