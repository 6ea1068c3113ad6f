package warptest

import (
	"net"
	"net/netip"
	"sync"
	"testing"
)

// testRelay is the least relay that keeps roaming clients on one server: per
// client ID one upstream socket, so the router always sees one source port,
// and replies go to the newest address the client sent from. The real relay,
// udpfwd, is tested against the bed in its own package.
type testRelay struct {
	conn     *net.UDPConn
	upstream netip.AddrPort
	wg       sync.WaitGroup

	mu      sync.Mutex
	clients map[ClientID]*relayClient
	closed  bool
}

type relayClient struct {
	up   *net.UDPConn
	last netip.AddrPort
}

func newTestRelay(t *testing.T, upstream netip.AddrPort) *testRelay {
	t.Helper()
	c, err := listenLoopback(0)
	if err != nil {
		t.Fatal(err)
	}
	r := &testRelay{conn: c, upstream: upstream, clients: map[ClientID]*relayClient{}}
	r.wg.Add(1)
	go r.run()
	t.Cleanup(r.close)
	return r
}

func (r *testRelay) addr() netip.AddrPort { return localAddrPort(r.conn) }

func (r *testRelay) run() {
	defer r.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if n < 4 {
			continue
		}
		id := ClientID(buf[1:4])
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return
		}
		rc := r.clients[id]
		if rc == nil {
			up, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(r.upstream))
			if err != nil {
				r.mu.Unlock()
				continue
			}
			rc = &relayClient{up: up}
			r.clients[id] = rc
			r.wg.Add(1)
			go r.replies(rc)
		}
		rc.last = from
		r.mu.Unlock()
		_, _ = rc.up.Write(buf[:n])
	}
}

func (r *testRelay) replies(rc *relayClient) {
	defer r.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, err := rc.up.Read(buf)
		if err != nil {
			return
		}
		r.mu.Lock()
		to := rc.last
		r.mu.Unlock()
		_, _ = r.conn.WriteToUDPAddrPort(buf[:n], to)
	}
}

func (r *testRelay) close() {
	r.conn.Close()
	r.mu.Lock()
	r.closed = true
	for _, rc := range r.clients {
		rc.up.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
