package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
)

// naiveRelay is a deliberately simple UDP relay: one upstream socket per
// client address (the shape of nginx's and socat's UDP proxying), one
// ReadFromUDP/WriteToUDP per datagram. It exists so `compare` and its tests
// have a relay that is always available, and as a per-datagram baseline.
type naiveRelay struct {
	listen   *net.UDPConn
	upstream *net.UDPAddr
	sockBuf  int

	mu       sync.Mutex
	sessions map[netip.AddrPort]*net.UDPConn
	wg       sync.WaitGroup
}

// runNaiveRelay relays between listen and upstream until ctx is done.
func runNaiveRelay(ctx context.Context, listen, upstream string, sockBuf int) error {
	la, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return fmt.Errorf("relay listen: %w", err)
	}
	ua, err := net.ResolveUDPAddr("udp", upstream)
	if err != nil {
		return fmt.Errorf("relay upstream: %w", err)
	}
	l, err := net.ListenUDP("udp", la)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	if _, _, err := setSockBuffers(l, sockBuf); err != nil {
		l.Close()
		return fmt.Errorf("relay: %w", err)
	}
	r := &naiveRelay{listen: l, upstream: ua, sockBuf: sockBuf, sessions: map[netip.AddrPort]*net.UDPConn{}}
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	err = r.serve()
	l.Close()
	r.mu.Lock()
	for _, c := range r.sessions {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// serve reads client datagrams and forwards each through its client's
// upstream socket, opening one on a client's first datagram.
func (r *naiveRelay) serve() error {
	buf := make([]byte, 65536)
	for {
		n, from, err := r.listen.ReadFromUDPAddrPort(buf)
		if err != nil {
			if isClosed(err) {
				return nil
			}
			return fmt.Errorf("relay read: %w", err)
		}
		up, err := r.session(from)
		if err != nil {
			return err
		}
		// A failed send is a lost datagram, as on any UDP path.
		_, _ = up.Write(buf[:n])
	}
}

func (r *naiveRelay) session(from netip.AddrPort) (*net.UDPConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.sessions[from]; ok {
		return c, nil
	}
	c, err := net.DialUDP("udp", nil, r.upstream)
	if err != nil {
		return nil, fmt.Errorf("relay upstream socket: %w", err)
	}
	if _, _, err := setSockBuffers(c, r.sockBuf); err != nil {
		c.Close()
		return nil, fmt.Errorf("relay upstream socket: %w", err)
	}
	r.sessions[from] = c
	r.wg.Go(func() { r.replies(c, from) })
	return c, nil
}

// replies copies upstream's replies back to the client at to.
func (r *naiveRelay) replies(c *net.UDPConn, to netip.AddrPort) {
	buf := make([]byte, 65536)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if errors.Is(err, unix.ECONNREFUSED) {
				continue // upstream not listening (yet): that datagram is lost
			}
			return
		}
		if _, err := r.listen.WriteToUDPAddrPort(buf[:n], to); err != nil && isClosed(err) {
			return
		}
	}
}
