package supervisor

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"syscall"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// resolved records an upstream endpoint's current address: new sessions
// connect to it, existing sessions keep theirs. The relay counts the change
// (UpstreamChanged) once, not each worker's supervisor.
func (s *Supervisor) resolved(m *messages.UpstreamResolved) {
	i := s.endpointIndex(m.Endpoint)
	if i < 0 {
		return // an endpoint a reload removed
	}
	s.addrs[i] = m.Addr
	s.refreshUpstream()
}

// dial opens an upstream socket to up: on a port the kernel picks, or on a
// free port of the configured range, tried from a random place in it.
func (s *Supervisor) dial(up netip.AddrPort) (*udpio.Conn, error) {
	return s.dialSpec(up).dial()
}

// dialSpec is how the supervisor dials up under today's configuration.
func (s *Supervisor) dialSpec(up netip.AddrPort) dialSpec {
	return dialSpec{up: up, bind: s.cfg.UpstreamBind, ports: s.cfg.UpstreamPorts, opt: s.cfg.SocketOptions}
}

// dialSpec is everything dialling an upstream socket depends on: a value,
// so that another goroutine may dial by it (spares) and sockets dialled by
// an older one are told apart by comparing.
type dialSpec struct {
	up    netip.AddrPort
	bind  netip.AddrPort
	ports [2]uint16
	opt   udpio.Options
}

// dial opens a socket as d says.
func (d dialSpec) dial() (*udpio.Conn, error) {
	lo, hi := d.ports[0], d.ports[1]
	if lo == 0 {
		return udpio.Dial(context.Background(), d.bind, d.up, d.opt)
	}
	addr := d.bind.Addr()
	if !addr.IsValid() {
		addr = netip.IPv4Unspecified()
		if d.up.Addr().Is6() {
			addr = netip.IPv6Unspecified()
		}
	}
	n := int(hi) - int(lo) + 1
	start := rand.IntN(n)
	var err error
	for i := 0; i < n; i++ {
		port := lo + uint16((start+i)%n)
		var c *udpio.Conn
		c, err = udpio.Dial(context.Background(), netip.AddrPortFrom(addr, port), d.up, d.opt)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("no free port in %d-%d: %w", lo, hi, err)
}

// redial opens a restored session's socket on the local address it had
// (unless why says today's configuration does not allow it),
// so that the upstream sees the same 4-tuple; if that cannot be bound any
// more, it dials as for a new session and says why in rebind.
func (s *Supervisor) redial(local, up netip.AddrPort, why string) (conn *udpio.Conn, rebind error, err error) {
	if why != "" {
		rebind = errors.New(why) // the saved port is not allowed by today's configuration
	} else if conn, rebind = udpio.Dial(context.Background(), local, up, s.cfg.SocketOptions); rebind == nil {
		return conn, nil, nil
	} else if errors.Is(rebind, syscall.EADDRINUSE) && s.spares.release(local) {
		// A spare socket held the port: it is the restored session's.
		if conn, rebind = udpio.Dial(context.Background(), local, up, s.cfg.SocketOptions); rebind == nil {
			return conn, nil, nil
		}
	}
	conn, err = s.dial(up)
	return conn, rebind, err
}
