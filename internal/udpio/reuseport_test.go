package udpio_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/udpfwd/udpfwd/internal/udpio"
)

func listenGroup(t *testing.T, addr string, cfg udpio.GroupConfig) *udpio.Group {
	t.Helper()
	g, err := udpio.ListenGroup(netip.MustParseAddrPort(addr), cfg)
	if err != nil {
		t.Fatalf("ListenGroup %s %+v: %v", addr, cfg, err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// arrival is one datagram as a group socket read it.
type arrival struct {
	socket  int
	payload []byte
}

// collect reads every socket of g in its own goroutine until g is closed
// and returns the channel the datagrams arrive on.
func collect(t *testing.T, g *udpio.Group) <-chan arrival {
	t.Helper()
	ch := make(chan arrival, 4096)
	var wg sync.WaitGroup
	for i, c := range g.Conns() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := udpio.GetBatch()
			defer b.Release()
			for {
				if err := c.ReadBatch(b); err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue
				}
				for j := range b.Datagrams {
					ch <- arrival{i, append([]byte(nil), b.Datagrams[j].Bytes()...)}
				}
			}
		}()
	}
	t.Cleanup(func() { g.Close(); wg.Wait() })
	return ch
}

// receive takes n datagrams from ch, or fails the test after testTimeout.
func receive(t *testing.T, ch <-chan arrival, n int) []arrival {
	t.Helper()
	var got []arrival
	timeout := time.After(testTimeout)
	for len(got) < n {
		select {
		case a := <-ch:
			got = append(got, a)
		case <-timeout:
			t.Fatalf("received %d of %d datagrams", len(got), n)
		}
	}
	return got
}

// transport returns a WireGuard-transport-shaped datagram from client id,
// with seq in the bytes after the header.
func transport(id uint32, seq int) []byte {
	p := make([]byte, 32)
	p[0], p[1], p[2], p[3] = 4, byte(id>>16), byte(id>>8), byte(id)
	p[8], p[9] = byte(seq>>8), byte(seq)
	return p
}

func TestGroupSteersByClientID(t *testing.T) {
	const sockets, ids, ports = 4, 200, 5
	for _, tt := range []struct{ name, listen, client, dial string }{
		{"ipv4", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1"},
		{"ipv6", "[::1]:0", "[::1]:0", "::1"},
		{"dual-stack group, ipv4 clients", "[::]:0", "127.0.0.1:0", "127.0.0.1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := listenGroup(t, tt.listen, udpio.GroupConfig{Sockets: sockets, Steer: true})
			if !g.Steered() || len(g.Conns()) != sockets {
				t.Fatalf("steered %v with %d sockets, want a steered group of %d", g.Steered(), len(g.Conns()), sockets)
			}
			port := g.LocalAddr().Port()
			for i, c := range g.Conns() {
				if c.LocalAddr().Port() != port || port == 0 {
					t.Fatalf("socket %d bound to %v, socket 0 to %v: want one port", i, c.LocalAddr(), g.LocalAddr())
				}
			}
			ch := collect(t, g)
			to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(tt.dial), port))

			// Client IDs spread over the 24-bit range, the zero ID first.
			idList := make([]uint32, ids)
			for i := range idList {
				idList[i] = uint32(i) * 83_885 % (1 << 24) // 83 885 is prime: distinct IDs, every residue mod 4
			}
			for p := 0; p < ports; p++ {
				c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(tt.client)))
				if err != nil {
					t.Fatal(err)
				}
				for _, id := range idList {
					if _, err := c.WriteToUDP(transport(id, p), to); err != nil {
						t.Fatal(err)
					}
				}
				c.Close()
			}
			// Datagrams too short to hold an ID: socket 0.
			short, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(tt.client)))
			if err != nil {
				t.Fatal(err)
			}
			defer short.Close()
			for n := 1; n <= 3; n++ {
				if _, err := short.WriteToUDP([]byte{4, 0xff, 0xff}[:n], to); err != nil {
					t.Fatal(err)
				}
			}

			seen := map[uint32]map[int]bool{} // ID -> sockets it reached
			shortOn := map[int]int{}
			for _, a := range receive(t, ch, ids*ports+3) {
				if len(a.payload) < 4 {
					shortOn[a.socket]++
					continue
				}
				id := uint32(a.payload[1])<<16 | uint32(a.payload[2])<<8 | uint32(a.payload[3])
				if seen[id] == nil {
					seen[id] = map[int]bool{}
				}
				seen[id][a.socket] = true
				if want := int(id % sockets); a.socket != want {
					t.Errorf("client %06x (port %d) landed on socket %d, want %d", id, a.payload[9], a.socket, want)
				}
				if udpio.GroupIndex(a.payload, sockets) != a.socket {
					t.Errorf("GroupIndex(client %06x) = %d, the kernel chose %d", id, udpio.GroupIndex(a.payload, sockets), a.socket)
				}
			}
			if len(seen) != ids {
				t.Errorf("%d distinct client IDs arrived, want %d", len(seen), ids)
			}
			if !seen[0][0] || len(seen[0]) != 1 {
				t.Errorf("the zero ID reached sockets %v, want socket 0 only", seen[0])
			}
			if shortOn[0] != 3 {
				t.Errorf("datagrams shorter than 4 bytes landed on %v, want all 3 on socket 0", shortOn)
			}
		})
	}
}

func TestGroupIndex(t *testing.T) {
	for _, tt := range []struct {
		name    string
		payload []byte
		n, want int
	}{
		{"zero ID", []byte{4, 0, 0, 0}, 4, 0},
		{"low byte", []byte{4, 0, 0, 7}, 4, 3},
		{"big-endian", []byte{4, 1, 0, 0}, 3, (1 << 16) % 3},
		{"type byte ignored", []byte{0xff, 0, 0, 5}, 4, 1},
		{"largest ID", []byte{4, 0xff, 0xff, 0xff}, 5, (1<<24 - 1) % 5},
		{"short", []byte{4, 0, 9}, 4, 0},
		{"one socket", []byte{4, 0, 0, 7}, 1, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := udpio.GroupIndex(tt.payload, tt.n); got != tt.want {
				t.Errorf("GroupIndex(% x, %d) = %d, want %d", tt.payload, tt.n, got, tt.want)
			}
		})
	}
}

func TestGroupConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  udpio.GroupConfig
		ok   bool
	}{
		{"one socket", udpio.GroupConfig{Sockets: 1}, true},
		{"steered", udpio.GroupConfig{Sockets: 4, Steer: true}, true},
		{"shared, one socket, steer ignored", udpio.GroupConfig{Sockets: 1, Shared: true, Steer: true}, true},
		{"shared, unsteered", udpio.GroupConfig{Sockets: 4, Shared: true}, true},
		{"no sockets", udpio.GroupConfig{}, false},
		{"shared and steered", udpio.GroupConfig{Sockets: 2, Shared: true, Steer: true}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if !tt.ok {
				if _, lerr := udpio.ListenGroup(netip.MustParseAddrPort("127.0.0.1:0"), tt.cfg); lerr == nil {
					t.Fatal("ListenGroup built a group Validate refuses")
				}
			}
		})
	}
}

// TestGroupPortStaysPrivate: a second group on a port in use fails with
// EADDRINUSE unless both groups share the port; a failed attempt leaves
// the first group as it was.
func TestGroupPortStaysPrivate(t *testing.T) {
	private4 := udpio.GroupConfig{Sockets: 4, Steer: true}
	for _, tt := range []struct {
		name          string
		first, second udpio.GroupConfig
		firstAddr     string
		secondHost    string // the second group's address, on the first one's port
		ok            bool
	}{
		{"private, private", private4, private4, "127.0.0.1:0", "127.0.0.1", false},
		{"private, shared", private4, udpio.GroupConfig{Sockets: 1, Shared: true}, "127.0.0.1:0", "127.0.0.1", false},
		{"private unsteered, shared unsteered", udpio.GroupConfig{Sockets: 4}, udpio.GroupConfig{Sockets: 2, Shared: true}, "127.0.0.1:0", "127.0.0.1", false},
		{"private one socket, shared", udpio.GroupConfig{Sockets: 1}, udpio.GroupConfig{Sockets: 1, Shared: true}, "127.0.0.1:0", "127.0.0.1", false},
		{"shared, private", udpio.GroupConfig{Sockets: 1, Shared: true}, private4, "127.0.0.1:0", "127.0.0.1", false},
		{"shared, private one socket", udpio.GroupConfig{Sockets: 1, Shared: true}, udpio.GroupConfig{Sockets: 1}, "127.0.0.1:0", "127.0.0.1", false},
		{"private dual-stack, shared ipv4", private4, udpio.GroupConfig{Sockets: 1, Shared: true}, "[::]:0", "127.0.0.1", false},
		{"private dual-stack, private ipv4", private4, private4, "[::]:0", "127.0.0.1", false},
		{"private ipv6, shared ipv6", private4, udpio.GroupConfig{Sockets: 1, Shared: true}, "[::1]:0", "::1", false},
		{"shared, shared", udpio.GroupConfig{Sockets: 1, Shared: true}, udpio.GroupConfig{Sockets: 1, Shared: true}, "127.0.0.1:0", "127.0.0.1", true},
		{"shared unsteered, shared", udpio.GroupConfig{Sockets: 2, Shared: true}, udpio.GroupConfig{Sockets: 1, Shared: true}, "[::1]:0", "::1", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			first := listenGroup(t, tt.firstAddr, tt.first)
			port := first.LocalAddr().Port()
			addr := netip.AddrPortFrom(netip.MustParseAddr(tt.secondHost), port)
			second, err := udpio.ListenGroup(addr, tt.second)
			if tt.ok {
				if err != nil {
					t.Fatalf("second group on %v: %v, want it to share the port", addr, err)
				}
				second.Close()
				return
			}
			if err == nil {
				second.Close()
				t.Fatalf("second group bound %v, which the first group uses", addr)
			}
			if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "in use") {
				t.Fatalf("second group: %v, want EADDRINUSE saying the port is in use", err)
			}
			// The first group still steers every client to its socket.
			if tt.first.Steer {
				checkSteering(t, first, netip.AddrPortFrom(netip.MustParseAddr(tt.secondHost), port))
			}
		})
	}
}

// checkSteering sends one datagram per residue to g and checks where each lands.
func checkSteering(t *testing.T, g *udpio.Group, to netip.AddrPort) {
	t.Helper()
	n := len(g.Conns())
	ch := collect(t, g)
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for id := 0; id < 4*n; id++ {
		c.Write(transport(uint32(id)*977, 0))
	}
	for _, a := range receive(t, ch, 4*n) {
		if want := udpio.GroupIndex(a.payload, n); a.socket != want {
			t.Errorf("after the refused group: datagram for socket %d landed on %d", want, a.socket)
		}
	}
}

func TestGroupRefusesPlainSockets(t *testing.T) {
	for _, cfg := range []udpio.GroupConfig{{Sockets: 4, Steer: true}, {Sockets: 1}} {
		g := listenGroup(t, "127.0.0.1:0", cfg)
		_, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(g.LocalAddr()))
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("%+v: a plain socket on the group's port: %v, want EADDRINUSE", cfg, err)
		}
	}
}

// TestGroupCloseFreesPort: a closed private group leaves its address and
// marker free for the next one (a reload rebuilds the group).
func TestGroupCloseFreesPort(t *testing.T) {
	g, err := udpio.ListenGroup(netip.MustParseAddrPort("127.0.0.1:0"), udpio.GroupConfig{Sockets: 3, Steer: true})
	if err != nil {
		t.Fatal(err)
	}
	addr := g.LocalAddr()
	g.Close()
	g2 := listenGroup(t, addr.String(), udpio.GroupConfig{Sockets: 2, Steer: true})
	if g2.LocalAddr() != addr {
		t.Fatalf("rebuilt group on %v, want %v", g2.LocalAddr(), addr)
	}
	checkSteering(t, g2, addr)
}

// TestGroupForeignJoiner documents what the kernel allows: a socket of the
// same user that sets SO_REUSEPORT on purpose joins a private group, but
// the steering program never picks it.
func TestGroupForeignJoiner(t *testing.T) {
	g := listenGroup(t, "127.0.0.1:0", udpio.GroupConfig{Sockets: 2, Steer: true})
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", g.LocalAddr().String())
	if err != nil {
		t.Skipf("this kernel refused a deliberate joiner (%v): nothing to document", err)
	}
	defer pc.Close()
	checkSteering(t, g, g.LocalAddr())
	pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, _, err := pc.ReadFrom(make([]byte, 64)); err == nil {
		t.Fatalf("the joiner received a %d-byte datagram: the program picked a socket outside the group", n)
	}
}

// TestGroupPrivateAcrossProcesses: the same refusal when the second group
// is in another process, and sharing when both ask for it.
func TestGroupPrivateAcrossProcesses(t *testing.T) {
	for _, tt := range []struct {
		name          string
		first         udpio.GroupConfig
		childShared   bool
		wantChildFail bool
	}{
		{"private, then a shared child", udpio.GroupConfig{Sockets: 4, Steer: true}, true, true},
		{"private, then a private child", udpio.GroupConfig{Sockets: 4, Steer: true}, false, true},
		{"shared, then a shared child", udpio.GroupConfig{Sockets: 1, Shared: true}, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := listenGroup(t, "127.0.0.1:0", tt.first)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestGroupChildProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), "UDPIO_GROUP_CHILD="+g.LocalAddr().String(), fmt.Sprintf("UDPIO_GROUP_CHILD_SHARED=%v", tt.childShared))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			failed := strings.Contains(string(out), "CHILD: in use")
			ok := strings.Contains(string(out), "CHILD: bound")
			if failed == ok || failed != tt.wantChildFail {
				t.Fatalf("child said %q, want it to fail=%v", out, tt.wantChildFail)
			}
		})
	}
}

// TestGroupChildProcess is the second process of
// TestGroupPrivateAcrossProcesses; it does nothing in a normal run.
func TestGroupChildProcess(t *testing.T) {
	addr := os.Getenv("UDPIO_GROUP_CHILD")
	if addr == "" {
		t.Skip("runs only as TestGroupPrivateAcrossProcesses's child")
	}
	cfg := udpio.GroupConfig{Sockets: 2, Steer: true}
	if os.Getenv("UDPIO_GROUP_CHILD_SHARED") == "true" {
		cfg = udpio.GroupConfig{Sockets: 1, Shared: true}
	}
	g, err := udpio.ListenGroup(netip.MustParseAddrPort(addr), cfg)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		fmt.Println("CHILD: in use:", err)
	case err != nil:
		t.Fatal(err)
	default:
		fmt.Println("CHILD: bound", g.LocalAddr())
		g.Close()
	}
}
