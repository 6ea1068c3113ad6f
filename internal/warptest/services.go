package warptest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
)

// Ports of the TCP services every edge server runs at [EdgeTunnelAddr].
const (
	// EchoPort: everything sent is sent back.
	EchoPort = 7
	// SinkPort: takes a request header and that many bytes of the stream,
	// verifies them byte for byte and answers with the result ([Client.Upload]).
	SinkPort = 9
	// SourcePort: takes a request header and sends that many bytes of the
	// stream ([Client.Download]).
	SourcePort = 19
)

// maxRequest bounds the size a client may ask the source or sink for.
const maxRequest = 1 << 40

// chunk is the size of the reads and writes of the services and transfers.
const chunk = 64 << 10

// services runs the echo, sink and source on one server's stack.
type services struct {
	listeners []net.Listener
	wg        sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func startServices(t *netTUN, addr netip.Addr) (*services, error) {
	s := &services{conns: make(map[net.Conn]struct{})}
	for _, svc := range []struct {
		port    uint16
		handler func(net.Conn) error
	}{
		{EchoPort, serveEcho},
		{SinkPort, serveSink},
		{SourcePort, serveSource},
	} {
		l, err := t.listenTCP(netip.AddrPortFrom(addr, svc.port))
		if err != nil {
			s.close()
			return nil, err
		}
		s.listeners = append(s.listeners, l)
		s.wg.Add(1)
		go s.accept(l, svc.handler)
	}
	return s, nil
}

func (s *services) accept(l net.Listener, handler func(net.Conn) error) {
	defer s.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			// A failed connection is the client's business: it verifies
			// what it gets and reports it.
			_ = handler(c)
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// close stops the listeners and connections and waits for their goroutines.
func (s *services) close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	for _, l := range s.listeners {
		l.Close()
	}
	s.wg.Wait()
}

func serveEcho(c net.Conn) error {
	_, err := io.Copy(c, c)
	return err
}

func readRequest(c net.Conn) (int64, uint64, error) {
	var h [requestHeaderLen]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return 0, 0, fmt.Errorf("warptest: read request: %w", err)
	}
	size, seed := parseRequest(h[:])
	if size < 0 || size > maxRequest {
		return 0, 0, fmt.Errorf("warptest: request of %d bytes", size)
	}
	return size, seed, nil
}

func serveSource(c net.Conn) error {
	size, seed, err := readRequest(c)
	if err != nil {
		return err
	}
	s := NewStream(seed)
	buf := make([]byte, chunk)
	for size > 0 {
		n := int(min(size, int64(len(buf))))
		_, _ = s.Read(buf[:n])
		if _, err := c.Write(buf[:n]); err != nil {
			return fmt.Errorf("warptest: source write: %w", err)
		}
		size -= int64(n)
	}
	return nil
}

func serveSink(c net.Conn) error {
	size, seed, err := readRequest(c)
	if err != nil {
		return err
	}
	v := newVerifier(seed)
	buf := make([]byte, chunk)
	var got int64
	status := byte(sinkOK)
	for got < size {
		n, err := c.Read(buf[:min(size-got, int64(len(buf)))])
		if n > 0 {
			if verr := v.check(buf[:n]); verr != nil {
				status = sinkMismatch
				break
			}
			got += int64(n)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return fmt.Errorf("warptest: sink read: %w", err)
		}
	}
	if got < size {
		status = sinkMismatch
	}
	var reply [sinkReplyLen]byte
	reply[0] = status
	putUint64(reply[1:], uint64(got))
	if _, err := c.Write(reply[:]); err != nil {
		return fmt.Errorf("warptest: sink reply: %w", err)
	}
	return nil
}
