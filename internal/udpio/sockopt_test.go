package udpio_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/udpio"
)

// A socket nobody reads, with the smallest buffer, drops what does not fit,
// and its drop counter says so.
func TestKernelDrops(t *testing.T) {
	c, err := udpio.Listen(netip.MustParseAddrPort("127.0.0.1:0"), udpio.Options{ReadBuffer: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n, err := c.KernelDrops(); err != nil || n != 0 {
		t.Fatalf("a new socket: %d drops, %v", n, err)
	}
	s, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(c.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	payload := make([]byte, 1200)
	deadline := time.Now().Add(testTimeout)
	for {
		// Each datagram takes more than 1 KiB of an 8 KiB buffer: a
		// hundred cannot all fit.
		for range 100 {
			s.Write(payload)
		}
		n, err := c.KernelDrops()
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no drop counted after overflowing the receive buffer")
		}
	}
}

// SetBuffers changes an open socket's buffers.
func TestSetBuffers(t *testing.T) {
	c := listen(t, "127.0.0.1:0")
	if err := c.SetBuffers(64<<10, 32<<10); err != nil {
		t.Fatal(err)
	}
	r, w, err := c.BufferSizes()
	if err != nil {
		t.Fatal(err)
	}
	// Linux reports twice what was asked for.
	if r != 128<<10 || w != 64<<10 {
		t.Fatalf("buffers %d/%d after asking for 64KiB/32KiB", r, w)
	}
}

// SetGSO switches an open socket's GSO, where the kernel has it.
func TestSetGSO(t *testing.T) {
	c, err := udpio.Listen(netip.MustParseAddrPort("127.0.0.1:0"), udpio.Options{NoGSO: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	kernel := listen(t, "127.0.0.1:0").GSO() // what this kernel offers
	if c.GSO() {
		t.Fatal("GSO on with NoGSO")
	}
	c.SetGSO(true)
	if c.GSO() != kernel {
		t.Fatalf("SetGSO(true): GSO %v, the kernel offers %v", c.GSO(), kernel)
	}
	c.SetGSO(false)
	if c.GSO() {
		t.Fatal("SetGSO(false) left GSO on")
	}
}
