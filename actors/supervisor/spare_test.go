package supervisor

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/udpio"
)

// awaitSpares waits, bounded, until p holds n sockets ready.
func awaitSpares(t *testing.T, p *Spares, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.len() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d spare sockets ready, want %d", p.len(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// freePort returns a UDP port of 127.0.0.1 nobody holds right now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

func TestSpares(t *testing.T) {
	up := netip.MustParseAddrPort("127.0.0.1:9") // never sent to
	other := netip.MustParseAddrPort("127.0.0.1:7")
	var p Spares
	defer p.Close()
	spec := dialSpec{up: up}
	if c := p.take(spec); c != nil {
		t.Fatal("a socket was ready before any refill")
	}
	p.refill()
	awaitSpares(t, &p, SpareSockets)
	c := p.take(spec)
	if c == nil || c.RemoteAddr() != up {
		t.Fatalf("took %v, want a socket connected to %v", c, up)
	}
	c.Close()
	if n := p.len(); n != SpareSockets-1 {
		t.Errorf("%d ready after a take, want %d", n, SpareSockets-1)
	}

	// Another upstream address (or configuration): the ready ones were
	// dialled for the old one and go.
	held := p.ready[0].LocalAddr()
	if c := p.take(dialSpec{up: other}); c != nil {
		t.Fatal("a socket dialled for another upstream was taken")
	}
	if n := p.len(); n != 0 {
		t.Errorf("%d ready for the old upstream after it changed, want 0", n)
	}
	if c, err := udpio.Dial(context.Background(), held, up, udpio.Options{}); err != nil {
		t.Errorf("a discarded spare's port is still held: %v", err)
	} else {
		c.Close()
	}
	p.refill()
	awaitSpares(t, &p, SpareSockets)
	if c := p.take(dialSpec{up: other}); c == nil || c.RemoteAddr() != other {
		t.Fatalf("took %v, want a socket connected to %v", c, other)
	} else {
		c.Close()
	}

	// A restored session gets its old port back from a spare holding it.
	want := p.ready[0].LocalAddr()
	if !p.release(want) {
		t.Fatal("release found no spare on a port a spare holds")
	}
	if c, err := udpio.Dial(context.Background(), want, other, udpio.Options{}); err != nil {
		t.Errorf("the released port is still held: %v", err)
	} else {
		c.Close()
	}

	// close stops the goroutine and closes what is ready.
	last := p.ready[0].LocalAddr()
	p.Close()
	if n := p.len(); n != 0 {
		t.Errorf("%d ready after close", n)
	}
	if c, err := udpio.Dial(context.Background(), last, up, udpio.Options{}); err != nil {
		t.Errorf("a spare's port is still held after close: %v", err)
	} else {
		c.Close()
	}
	p.refill() // nothing: closed
	if c := p.take(spec); c != nil {
		t.Error("a socket was ready after close")
	}
}

// With a range of one port, the spares never keep the port from a new
// session: whoever dials first, the admission gets a socket on it while
// it is free.
func TestSparesLastPort(t *testing.T) {
	up := netip.MustParseAddrPort("127.0.0.1:9")
	port := freePort(t)
	spec := dialSpec{up: up, bind: netip.MustParseAddrPort("127.0.0.1:0"), ports: [2]uint16{port, port}}
	var p Spares
	defer p.Close()
	for i := range 20 {
		c, err := p.get(spec)
		if err != nil {
			t.Fatalf("round %d: no socket on the one free port: %v", i, err)
		}
		if got := c.LocalAddr().Port(); got != port {
			t.Fatalf("round %d: a socket on port %d, want %d", i, got, port)
		}
		// A second session finds the port taken, spares or not.
		if c2, err := p.get(spec); err == nil {
			t.Fatalf("round %d: a second socket on port %d", i, c2.LocalAddr().Port())
		}
		c.Close()
		p.mu.Lock()
		p.retry = time.Time{} // the port is free again: no need to wait
		p.mu.Unlock()
		if i%2 == 0 {
			p.refill() // let the goroutine take it, sometimes
		}
	}
}
