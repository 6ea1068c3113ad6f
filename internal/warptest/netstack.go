package warptest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// DefaultMTU is the tunnels' MTU unless told otherwise: WARP's. With it every
// transport datagram is a multiple of 16 bytes long; with an MTU that is not
// (WireGuard's usual 1420), full-size packets are not padded to one, because
// WireGuard never pads past the MTU (1420 + 32 = 1452 bytes).
const DefaultMTU = 1280

// maxRTO caps TCP's retransmission timeout in the bed's stacks (TCP's own
// cap is 120 s). On a busy machine packets are lost inside the process (a
// starved goroutine's queue fills), and a segment lost a few times in a row
// backs off to many seconds: a download through udpfwd paused for 12 s with
// nothing dropped by udpfwd, which a test cannot tell from a stall the relay
// caused. With the cap, TCP tries again every second at most, and resumes
// within a second once the machine lets it. TCP never gives up for time
// alone here (no user timeout), so the cap costs nothing else.
const maxRTO = time.Second

// netTUN is a tun.Device whose other side is a gVisor TCP/IP stack in this
// process. It follows wireguard-go's tun/netstack, with three differences
// that matter to a test bed: TCP SACK stays off (with SACK on, netstack's TCP
// often crawled for many seconds after a client changed its port), TCP's
// retransmission timeout is capped (maxRTO), and Close waits for the stack's
// goroutines and never blocks or panics on a packet in flight.
type netTUN struct {
	ep       *channel.Endpoint
	stack    *stack.Stack
	notify   *channel.NotificationHandle
	events   chan tun.Event
	incoming chan *buffer.View
	done     chan struct{}
	once     sync.Once
	mtu      int
}

// newNetTUN creates a stack with the IPv4 address addr and the MTU mtu.
func newNetTUN(addr netip.Addr, mtu int) (*netTUN, error) {
	if !addr.Is4() {
		return nil, fmt.Errorf("warptest: tunnel address %v is not IPv4", addr)
	}
	if mtu < 576 || mtu > 9000 {
		return nil, fmt.Errorf("warptest: MTU %d: want 576..9000", mtu)
	}
	t := &netTUN{
		mtu: mtu,
		ep:  channel.New(1024, uint32(mtu), ""),
		stack: stack.New(stack.Options{
			NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
			TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
			HandleLocal:        true,
		}),
		events:   make(chan tun.Event, 1),
		incoming: make(chan *buffer.View),
		done:     make(chan struct{}),
	}
	sack := tcpip.TCPSACKEnabled(false)
	if err := t.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		t.stack.Destroy()
		return nil, fmt.Errorf("warptest: disable TCP SACK: %v", err)
	}
	rto := tcpip.TCPMaxRTOOption(maxRTO)
	if err := t.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &rto); err != nil {
		t.stack.Destroy()
		return nil, fmt.Errorf("warptest: cap TCP's retransmission timeout: %v", err)
	}
	t.notify = t.ep.AddNotify(t)
	if err := t.stack.CreateNIC(1, t.ep); err != nil {
		t.Close()
		return nil, fmt.Errorf("warptest: create NIC: %v", err)
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFromSlice(addr.AsSlice()).WithPrefix(),
	}
	if err := t.stack.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
		t.Close()
		return nil, fmt.Errorf("warptest: add address %v: %v", addr, err)
	}
	t.stack.AddRoute(tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: 1})
	t.events <- tun.EventUp
	return t, nil
}

// File is part of tun.Device; there is no file.
func (t *netTUN) File() *os.File { return nil }

// Name is part of tun.Device.
func (t *netTUN) Name() (string, error) { return "warptest", nil }

// MTU is part of tun.Device.
func (t *netTUN) MTU() (int, error) { return t.mtu, nil }

// BatchSize is part of tun.Device: one packet per Read.
func (t *netTUN) BatchSize() int { return 1 }

// Events is part of tun.Device.
func (t *netTUN) Events() <-chan tun.Event { return t.events }

// Read hands wireguard-go the next packet the stack sends.
func (t *netTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case v := <-t.incoming:
		defer v.Release()
		n, err := v.Read(bufs[0][offset:])
		if err != nil {
			return 0, err
		}
		sizes[0] = n
		return 1, nil
	case <-t.done:
		return 0, os.ErrClosed
	}
}

// Write gives the stack packets that came out of the tunnel.
func (t *netTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		p := b[offset:]
		if len(p) == 0 {
			continue
		}
		if p[0]>>4 != 4 {
			return 0, syscall.EAFNOSUPPORT
		}
		pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		t.ep.InjectInbound(header.IPv4ProtocolNumber, pkb)
		pkb.DecRef()
	}
	return len(bufs), nil
}

// WriteNotify is called by the channel endpoint when the stack has queued an
// outgoing packet; it passes the packet on to Read.
func (t *netTUN) WriteNotify() {
	pkt := t.ep.Read()
	if pkt == nil {
		return
	}
	v := pkt.ToView()
	pkt.DecRef()
	select {
	case t.incoming <- v:
	case <-t.done:
		v.Release()
	}
}

// Close aborts every connection of the stack and waits for its goroutines.
func (t *netTUN) Close() error {
	t.once.Do(func() {
		close(t.done)
		t.ep.RemoveNotify(t.notify)
		t.stack.Close()
		t.stack.Wait()
		t.ep.Close()
		close(t.events)
	})
	return nil
}

func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}
}

// dialTCP opens a TCP connection from the stack to addr.
func (t *netTUN) dialTCP(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	c, err := gonet.DialContextTCP(ctx, t.stack, fullAddr(addr), ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("warptest: dial %v in the tunnel: %w", addr, err)
	}
	return c, nil
}

// listenTCP listens for TCP connections on addr inside the stack.
func (t *netTUN) listenTCP(addr netip.AddrPort) (net.Listener, error) {
	l, err := gonet.ListenTCP(t.stack, fullAddr(addr), ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("warptest: listen on %v in the tunnel: %w", addr, err)
	}
	return l, nil
}
