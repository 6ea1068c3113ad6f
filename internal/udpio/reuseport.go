package udpio

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// GroupConfig describes a listening group: several sockets on one address,
// so that several workers each read their own.
type GroupConfig struct {
	// Sockets is how many sockets the group has, one per worker (>= 1).
	Sockets int
	// Steer attaches a classic BPF program that sends every datagram to
	// socket (client ID mod Sockets), the client ID being payload bytes
	// 1..3 read as a big-endian number (see GroupIndex). A client keeps
	// its socket when its source address changes. Without it the kernel
	// spreads datagrams by their 4-tuple. Ignored with one socket.
	Steer bool
	// Shared lets other groups that also ask for sharing, in this process
	// or another of the same user, bind the same address and join the
	// kernel's group (the future --reuse-port): several processes then
	// share the port and the kernel spreads datagrams over all of their
	// sockets by 4-tuple. A group that does not share its port is
	// private: binding it fails with EADDRINUSE while anything else uses
	// the address, and groups built here fail to join it.
	Shared bool
	// Options apply to every socket of the group.
	Options Options
}

// Validate reports a configuration ListenGroup cannot build.
func (c GroupConfig) Validate() error {
	if c.Sockets < 1 || c.Sockets > maxGroupSockets {
		return fmt.Errorf("listening group: %d sockets, want 1..%d", c.Sockets, maxGroupSockets)
	}
	if c.Shared && c.Steer && c.Sockets > 1 {
		// The kernel keeps one program and one numbering for the whole
		// group: with other processes' sockets in it, (ID mod Sockets)
		// would name this process's sockets only, or none.
		return errors.New("listening group: a shared port cannot be steered by client ID (one socket per process, or a private group)")
	}
	return nil
}

// maxGroupSockets bounds a group; the kernel allows 65535 sockets in one
// SO_REUSEPORT group, and no machine udpfwd runs on has that many cores.
const maxGroupSockets = 1024

// Group is a set of UDP sockets bound to one address with SO_REUSEPORT,
// numbered in bind order: Conns()[i] is the kernel's socket i, the one a
// steering program's return value i picks.
//
// A group is built and closed whole: the kernel renumbers the group when
// one of its sockets closes (the last one moves into the freed slot), so
// closing one socket alone would send its clients to another worker.
//
// Keeping the port private: SO_REUSEPORT lets any socket of the same user
// that sets it join a group, and the kernel offers no flag to refuse
// joiners. A private group of several sockets therefore attaches its
// program to its first socket before binding it (for an unsteered group,
// one that returns an out-of-range index, which the kernel answers with
// its 4-tuple hash). The kernel refuses to bind a socket that already
// carries a reuseport program to an address in use by any socket,
// reuseport or not (measured on Linux 6.18; udp_lib_lport_inuse checks
// sk_reuseport_cb), so the group can only be created on a free address
// and a second private group fails with EADDRINUSE without a race. A
// private group of one socket does not set SO_REUSEPORT at all. Shared
// groups cannot use that check (they must be able to join), so a private
// group of several sockets also holds a marker for the life of the group:
// an abstract unix socket named after its address, which the kernel
// removes when the process dies. A shared group checks for the markers
// that cover its address before and after binding, and fails with
// EADDRINUSE if a private group holds one. A foreign program that sets
// SO_REUSEPORT on purpose can still join a private group (the kernel
// allows any socket of the same user): it gets the index after the
// group's last socket, which the steering program never returns.
type Group struct {
	conns   []*Conn
	marker  int // the private marker's descriptor, or -1
	steered bool
}

// ListenGroup binds cfg.Sockets sockets to addr as one SO_REUSEPORT group
// (see Group). An unspecified IPv6 address ("[::]:port") gives dual-stack
// sockets that receive IPv4 too; port 0 lets the kernel choose the port,
// which every socket of the group then shares. A port in use by another
// socket fails with an error wrapping syscall.EADDRINUSE, unless both the
// other group and this one are Shared.
func ListenGroup(addr netip.AddrPort, cfg GroupConfig) (*Group, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Group{marker: -1}
	network := listenNetwork(addr)
	private := !cfg.Shared
	var prog *unix.SockFprog
	if private && cfg.Sockets > 1 {
		p, err := groupProgram(cfg.Sockets, cfg.Steer)
		if err != nil {
			return nil, err
		}
		prog = p
		g.steered = cfg.Steer
		if addr.Port() != 0 {
			if err := g.takeMarker(addr); err != nil {
				return nil, err
			}
		}
	}
	if cfg.Shared {
		if err := checkNoPrivateGroup(addr); err != nil {
			return nil, err
		}
	}
	reuse := cfg.Shared || cfg.Sockets > 1
	bindAddr := addr
	for i := 0; i < cfg.Sockets; i++ {
		var first *unix.SockFprog
		if i == 0 {
			first = prog
		}
		c, err := listenReuse(network, bindAddr, reuse, first, cfg.Options)
		if err != nil {
			g.Close()
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("listen %v: port in use: %w", addr, err)
			}
			return nil, fmt.Errorf("listen %v (socket %d of %d): %w", addr, i+1, cfg.Sockets, err)
		}
		g.conns = append(g.conns, c)
		if i == 0 {
			bindAddr = netip.AddrPortFrom(addr.Addr(), c.LocalAddr().Port())
			if prog != nil && addr.Port() == 0 {
				if err := g.takeMarker(bindAddr); err != nil {
					g.Close()
					return nil, err
				}
			}
		}
	}
	if cfg.Shared {
		// A private group may have been built between the first check
		// and the bind: then this group joined it, and must leave.
		if err := checkNoPrivateGroup(bindAddr); err != nil {
			g.Close()
			return nil, err
		}
	}
	return g, nil
}

// listenNetwork is the Go network for addr, as Listen chooses it.
func listenNetwork(addr netip.AddrPort) string {
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		if addr.Addr().IsUnspecified() {
			return "udp" // dual stack
		}
		return "udp6"
	}
	return "udp4"
}

// listenReuse binds one socket of a group: SO_REUSEPORT if reuse, and prog
// attached before the bind if not nil.
func listenReuse(network string, addr netip.AddrPort, reuse bool, prog *unix.SockFprog, opt Options) (*Conn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if reuse {
				if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
					serr = fmt.Errorf("SO_REUSEPORT: %w", serr)
					return
				}
			}
			if prog != nil {
				if serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, prog); serr != nil {
					serr = fmt.Errorf("SO_ATTACH_REUSEPORT_CBPF: %w", serr)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), network, addr.String())
	if err != nil {
		return nil, err
	}
	return newConn(pc.(*net.UDPConn), netip.AddrPort{}, opt)
}

// Conns returns the group's sockets; index i is the kernel's socket i.
// The slice belongs to the group.
func (g *Group) Conns() []*Conn { return g.conns }

// LocalAddr is the address every socket of the group is bound to.
func (g *Group) LocalAddr() netip.AddrPort {
	if len(g.conns) == 0 {
		return netip.AddrPort{}
	}
	return g.conns[0].LocalAddr()
}

// Steered reports whether the client-ID program picks the socket.
func (g *Group) Steered() bool { return g.steered }

// Close closes every socket of the group and releases its marker. Blocked
// reads return net.ErrClosed.
func (g *Group) Close() error {
	var first error
	for _, c := range g.conns {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	g.conns = nil
	if g.marker >= 0 {
		unix.Close(g.marker)
		g.marker = -1
	}
	return first
}

// GroupIndex returns the socket of a steered group of n sockets that the
// kernel picks for a datagram with this payload: payload bytes 1..3 read as
// a big-endian number (the WARP client ID in header order), modulo n.
// Payloads shorter than 4 bytes, and the zero ID, land on socket 0.
func GroupIndex(payload []byte, n int) int {
	if len(payload) < 4 || n <= 1 {
		return 0
	}
	id := uint32(payload[1])<<16 | uint32(payload[2])<<8 | uint32(payload[3])
	return int(id % uint32(n))
}

// groupProgram assembles the classic BPF program a private group of n
// sockets attaches. Offset 0 is the UDP payload. With steer, it returns
// (bytes 1..3 mod n); a datagram shorter than 4 bytes makes the load fail,
// which ends the program with 0. Without, it returns an index no group
// has, and the kernel falls back to its 4-tuple hash.
func groupProgram(n int, steer bool) (*unix.SockFprog, error) {
	ins := []bpf.Instruction{bpf.RetConstant{Val: 0xffffffff}}
	if steer {
		ins = []bpf.Instruction{
			bpf.LoadAbsolute{Off: 0, Size: 4},
			bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x00ffffff},
			bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: uint32(n)},
			bpf.RetA{},
		}
	}
	raw, err := bpf.Assemble(ins)
	if err != nil {
		return nil, fmt.Errorf("assemble the steering program: %w", err)
	}
	f := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		f[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return &unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}, nil
}

// markerName is the abstract unix socket name a private group on addr
// holds. Abstract names live in the network namespace, like ports.
func markerName(addr netip.AddrPort) string {
	a := addr.Addr().Unmap().WithZone("")
	return fmt.Sprintf("@udpfwd/udp-private/%v", netip.AddrPortFrom(a, addr.Port()))
}

// takeMarker binds the private marker for addr; another private group on
// the same address holds it already.
func (g *Group) takeMarker(addr netip.AddrPort) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("listen %v: private marker: %w", addr, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: markerName(addr)}); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EADDRINUSE) {
			return fmt.Errorf("listen %v: port in use: %w", addr, syscall.EADDRINUSE)
		}
		return fmt.Errorf("listen %v: private marker: %w", addr, err)
	}
	g.marker = fd
	return nil
}

// checkNoPrivateGroup fails with EADDRINUSE if a private group holds a
// marker for an address whose traffic a shared group on addr would take:
// the same address, or the wildcard that covers it.
func checkNoPrivateGroup(addr netip.AddrPort) error {
	if addr.Port() == 0 {
		return nil // a new port: nobody can hold it yet
	}
	a := addr.Addr().Unmap()
	cover := []netip.Addr{a, netip.IPv6Unspecified()}
	if a.Is4() {
		cover = append(cover, netip.IPv4Unspecified())
	}
	for _, c := range cover {
		held, err := markerHeld(netip.AddrPortFrom(c, addr.Port()))
		if err != nil {
			return fmt.Errorf("listen %v: %w", addr, err)
		}
		if held {
			return fmt.Errorf("listen %v: port in use by a private group on %v: %w", addr, netip.AddrPortFrom(c, addr.Port()), syscall.EADDRINUSE)
		}
	}
	return nil
}

// markerHeld reports whether some process holds the private marker for
// addr. It connects rather than binds, so that checking never occupies the
// name: connecting to an abstract name nobody bound is refused.
func markerHeld(addr netip.AddrPort) (bool, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("private marker: %w", err)
	}
	defer unix.Close(fd)
	err = unix.Connect(fd, &unix.SockaddrUnix{Name: markerName(addr)})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ECONNREFUSED), errors.Is(err, unix.ENOENT):
		return false, nil
	}
	return false, fmt.Errorf("private marker: %w", err)
}
