package udpio

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultSocketBuffer is the receive and send buffer size asked for on every
// socket. The kernel's 208 KB default overflows under bursts of a few hundred
// datagrams in flight; 4 MB held in measurements on 2-core machines.
const DefaultSocketBuffer = 4 << 20

// Options are socket options applied when a Conn is opened.
type Options struct {
	// ReadBuffer and WriteBuffer are SO_RCVBUF and SO_SNDBUF in bytes;
	// zero means DefaultSocketBuffer. The kernel caps them at
	// net.core.rmem_max / wmem_max unless the process may use the *FORCE
	// variants (root or CAP_NET_ADMIN), which are tried first.
	ReadBuffer, WriteBuffer int
	// NoGSO sends every datagram as its own message, never several as one
	// UDP GSO message (see WriteBatch).
	NoGSO bool
}

// Conn is a UDP socket that reads and writes batches of datagrams with
// recvmmsg and sendmmsg and never allocates per datagram.
//
// One goroutine may read and one other goroutine may write at the same time.
// After Close, reads and writes return an error wrapping net.ErrClosed.
type Conn struct {
	uc     *net.UDPConn
	rc     syscall.RawConn
	v6     bool           // the socket is AF_INET6 (addresses are written as sockaddr_in6)
	remote netip.AddrPort // the connected peer, or the zero value
	local  netip.AddrPort

	foreign int // datagrams from other sources discarded by ReadBatch; reader-owned

	// Writer-owned: whether WriteBatch may send runs of datagrams as one
	// UDP GSO message, and how many messages it has handed to the kernel.
	gso      bool
	messages uint64

	// The functions handed to RawConn.Read and Write are bound once, so
	// that a system call allocates no closure. rd belongs to the reading
	// goroutine, wr to the writing one.
	rd, wr syscaller
}

// syscaller holds one system call's arguments and results for a function
// bound once to RawConn.Read or Write.
type syscaller struct {
	op    uintptr // SYS_RECVMMSG, SYS_SENDMMSG or SYS_RECVFROM (a peek)
	hdrs  *unix.Mmsghdr
	vlen  int
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

func (s *syscaller) call(fd uintptr) bool {
	var r uintptr
	if s.op == unix.SYS_RECVFROM {
		// A zero-length peek: succeeds if anything is queued, EAGAIN if not.
		r, _, s.errno = unix.Syscall6(unix.SYS_RECVFROM, fd, 0, 0, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	} else {
		r, _, s.errno = unix.Syscall6(s.op, fd, uintptr(unsafe.Pointer(s.hdrs)), uintptr(s.vlen), 0, 0, 0)
	}
	s.n = int(r)
	return s.errno != unix.EAGAIN && s.errno != unix.EINTR
}

// Listen opens an unconnected socket bound to addr. An unspecified IPv6
// address ("[::]:port") gives a dual-stack socket that also receives IPv4,
// whose peers then appear as IPv4-mapped IPv6 addresses.
func Listen(addr netip.AddrPort, opt Options) (*Conn, error) {
	network := "udp4"
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		network = "udp6"
		if addr.Addr().IsUnspecified() {
			network = "udp" // dual stack
		}
	}
	uc, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, err
	}
	return newConn(uc, netip.AddrPort{}, opt)
}

// Dial opens a socket connected to remote, bound to local (the zero value or
// a zero port lets the kernel choose). Only datagrams from remote are read.
func Dial(ctx context.Context, local, remote netip.AddrPort, opt Options) (*Conn, error) {
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	network := "udp4"
	if remote.Addr().Is6() {
		network = "udp6"
	}
	d := net.Dialer{}
	if local.IsValid() {
		d.LocalAddr = net.UDPAddrFromAddrPort(local)
	}
	c, err := d.DialContext(ctx, network, remote.String())
	if err != nil {
		return nil, err
	}
	return newConn(c.(*net.UDPConn), remote, opt)
}

func newConn(uc *net.UDPConn, remote netip.AddrPort, opt Options) (*Conn, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, err
	}
	c := &Conn{uc: uc, rc: rc, remote: remote, local: uc.LocalAddr().(*net.UDPAddr).AddrPort()}
	c.rd.fn, c.wr.fn = c.rd.call, c.wr.call
	var domain int
	var serr error
	err = rc.Control(func(fd uintptr) {
		domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if serr != nil {
			return
		}
		rb, wb := opt.ReadBuffer, opt.WriteBuffer
		if rb == 0 {
			rb = DefaultSocketBuffer
		}
		if wb == 0 {
			wb = DefaultSocketBuffer
		}
		setBuffer(int(fd), unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, rb)
		setBuffer(int(fd), unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, wb)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("configure socket: %w", err)
	}
	c.v6 = domain == unix.AF_INET6
	c.gso = !opt.NoGSO && gsoSupported(rc)
	return c, nil
}

// gsoSupported reports whether the kernel knows UDP_SEGMENT (Linux 4.18
// and later), as wireguard-go and quic-go check it.
func gsoSupported(rc syscall.RawConn) bool {
	var err error
	if cerr := rc.Control(func(fd uintptr) {
		_, err = unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
	}); cerr != nil {
		return false
	}
	return err == nil
}

// setBuffer asks for size with the privileged option first and falls back
// to the capped one. Failure is not fatal: the socket works with the
// kernel's size, which BufferSizes reports.
func setBuffer(fd, force, plain, size int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size)
	}
}

// BufferSizes reports the socket's effective receive and send buffer sizes
// as the kernel accounts them (twice what was asked for, on Linux).
func (c *Conn) BufferSizes() (read, write int, err error) {
	cerr := c.rc.Control(func(fd uintptr) {
		read, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		if err == nil {
			write, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
		}
	})
	if cerr != nil {
		return 0, 0, cerr
	}
	return read, write, err
}

// LocalAddr is the address the socket is bound to.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// RemoteAddr is the connected peer, or the zero value for a listening socket.
func (c *Conn) RemoteAddr() netip.AddrPort { return c.remote }

// Close closes the socket; a blocked read returns net.ErrClosed.
func (c *Conn) Close() error { return c.uc.Close() }

// WaitReadable blocks until a datagram is queued on the socket, holding no
// buffer meanwhile, so that thousands of idle sockets cost no memory for
// buffers. It returns an error wrapping net.ErrClosed after Close.
func (c *Conn) WaitReadable() error {
	c.rd.op = unix.SYS_RECVFROM
	if err := c.rc.Read(c.rd.fn); err != nil {
		return err
	}
	if e := c.rd.errno; e != 0 && !isTransient(e) {
		return os.NewSyscallError("recvfrom", e)
	}
	return nil
}

// ReadBatch reads at least one and at most MaxBatch datagrams into b,
// attaching pooled buffers as needed; b.Datagrams holds what was read. It blocks until
// a datagram arrives. On a connected socket datagrams from any other source
// are discarded. Errors that the kernel reports for an earlier send (such as
// ECONNREFUSED after an ICMP port unreachable) are returned to the caller,
// which may keep reading; IsTransient tells them apart.
func (c *Conn) ReadBatch(b *Batch) error {
	for i := range b.store {
		if b.store[i].Buf == nil {
			b.store[i].Buf = GetBuffer()
		}
		b.iovs[i].Base = &b.store[i].Buf[0]
		b.iovs[i].SetLen(BufferSize)
		h := &b.hdrs[i].Hdr
		*h = unix.Msghdr{}
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		b.hdrs[i].Len = 0
	}
	c.rd.op, c.rd.hdrs, c.rd.vlen = unix.SYS_RECVMMSG, &b.hdrs[0], MaxBatch
	defer func() { c.rd.hdrs = nil }()
	for {
		err := c.rc.Read(c.rd.fn)
		n, operr := c.rd.n, c.rd.errno
		if err != nil {
			b.Datagrams = b.store[:0]
			return err
		}
		if operr != 0 {
			b.Datagrams = b.store[:0]
			return os.NewSyscallError("recvmmsg", operr)
		}
		k := 0
		for i := 0; i < n; i++ {
			d := &b.store[i]
			d.N = int(b.hdrs[i].Len)
			d.Truncated = b.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0
			d.Addr = sockaddrToAddrPort(&b.names[i])
			if c.remote.IsValid() && d.Addr != c.remote {
				c.foreign++ // not from the connected peer
				continue
			}
			if k != i {
				b.store[k], b.store[i] = b.store[i], b.store[k]
			}
			k++
		}
		if k > 0 {
			b.Datagrams = b.store[:k]
			return nil
		}
	}
}

// TakeForeign returns how many datagrams from sources other than the
// connected peer ReadBatch has discarded since the last call. Only the
// reading goroutine may call it.
func (c *Conn) TakeForeign() int {
	n := c.foreign
	c.foreign = 0
	return n
}

// WriteBatch sends ds with as few sendmmsg calls as possible. On a connected
// socket the addresses are ignored. A datagram the kernel refuses (for
// example an unreachable address) is skipped and counted in failed, with the
// first such error in err; the rest are still sent. sent+failed == len(ds)
// unless the socket is closed, which returns an error wrapping net.ErrClosed.
// scratch provides the system-call space; it may be the batch that holds ds.
//
// Runs of datagrams to the same address, all of one size but the last,
// which may be shorter, go as one message with UDP generic segmentation
// offload (UDP_SEGMENT, as wireguard-go and quic-go send): the kernel cuts
// the message into the same datagrams, unchanged and in order, after one
// trip through the stack instead of one per datagram. If the kernel refuses
// such a message, its datagrams are sent one by one; if it says the device
// cannot segment (EIO), the socket stops using GSO.
func (c *Conn) WriteBatch(scratch *Batch, ds []Datagram) (sent, failed int, err error) {
	plain := 0 // how many of ds, from the front, must go one per message
	for len(ds) > 0 {
		m, used := 0, 0 // messages, datagrams in them (one iovec each)
		for end := min(len(ds), MaxBatch); used < end; {
			k := 1
			if c.gso && used >= plain {
				k = gsoRun(ds[used:end])
			}
			c.buildMessage(scratch, m, ds[used:used+k], used)
			m++
			used += k
		}
		c.wr.op, c.wr.hdrs, c.wr.vlen = unix.SYS_SENDMMSG, &scratch.hdrs[0], m
		werr := c.rc.Write(c.wr.fn)
		c.wr.hdrs = nil
		n, operr := c.wr.n, c.wr.errno
		if werr != nil {
			return sent, failed, werr
		}
		if operr != 0 {
			k := scratch.segs[0]
			if k > 1 {
				// The first message was a GSO run: send its datagrams
				// one by one, each with its own verdict.
				if operr == unix.EIO {
					c.gso = false
				}
				plain = k
				continue
			}
			// The first datagram failed: skip it, keep the rest.
			if err == nil {
				err = os.NewSyscallError("sendmmsg", operr)
			}
			failed++
			ds = ds[1:]
			plain = max(0, plain-1)
			continue
		}
		c.messages += uint64(n)
		k := 0
		for i := 0; i < n; i++ {
			k += scratch.segs[i]
		}
		sent += k
		ds = ds[k:]
		plain = max(0, plain-k)
	}
	return sent, failed, err
}

// GSO limits: the kernel takes at most 64 segments per message on older
// kernels (UDP_MAX_SEGMENTS), and a message must fit one IP datagram's
// length field with its headers.
const (
	maxGSOSegments = 64
	maxGSOBytes    = 65535 - 40 - 8 - 64 // minus IPv6 and UDP headers, and slack
	gsoControlSize = 32                  // >= unix.CmsgSpace(2) on every platform
)

// gsoRun returns how many datagrams from the front of ds can go as one GSO
// message: same address, the first one's size, the last may be shorter.
func gsoRun(ds []Datagram) int {
	size := ds[0].N
	total, k := size, 1
	for k < len(ds) && k < maxGSOSegments {
		d := &ds[k]
		if d.Addr != ds[0].Addr || d.N > size || d.N == 0 || total+d.N > maxGSOBytes {
			break
		}
		total += d.N
		k++
		if d.N < size {
			break // a shorter datagram ends the run
		}
	}
	return k
}

// buildMessage fills message m of scratch with ds, whose first datagram is
// number first of this write (its iovec slot).
func (c *Conn) buildMessage(scratch *Batch, m int, ds []Datagram, first int) {
	for i := range ds {
		scratch.iovs[first+i].Base = &ds[i].Buf[0]
		scratch.iovs[first+i].SetLen(ds[i].N)
	}
	h := &scratch.hdrs[m].Hdr
	*h = unix.Msghdr{}
	h.Iov = &scratch.iovs[first]
	h.SetIovlen(len(ds))
	if !c.remote.IsValid() {
		h.Name = (*byte)(unsafe.Pointer(&scratch.names[m]))
		h.Namelen = c.addrPortToSockaddr(ds[0].Addr, &scratch.names[m])
	}
	scratch.segs[m] = len(ds)
	if len(ds) > 1 {
		ctrl := scratch.ctrl[m][:unix.CmsgSpace(2)]
		clear(ctrl)
		cm := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
		cm.Level, cm.Type = unix.SOL_UDP, unix.UDP_SEGMENT
		cm.SetLen(unix.CmsgLen(2))
		*(*uint16)(unsafe.Pointer(&ctrl[unix.CmsgLen(0)])) = uint16(ds[0].N)
		h.Control = &ctrl[0]
		h.SetControllen(len(ctrl))
	}
}

// Written is what WriteAll did with a batch. It has no byte count: which
// datagrams the kernel refused is not known, so callers count bytes where
// they hand the datagrams over.
type Written struct {
	Sent    int   // datagrams the kernel took
	Dropped int   // datagrams refused, or not sent because the socket closed
	Err     error // the first error
}

// WriteAll sends every datagram of b with as few sendmmsg calls as
// possible, using b's own scratch space, and says what became of them.
func (c *Conn) WriteAll(b *Batch) Written {
	if len(b.Datagrams) == 0 {
		return Written{}
	}
	sent, _, err := c.WriteBatch(b, b.Datagrams)
	return Written{Sent: sent, Dropped: len(b.Datagrams) - sent, Err: err}
}

// IsTransient reports whether a read or write error concerns one datagram or
// an earlier ICMP error rather than the socket: the caller should go on.
func IsTransient(err error) bool {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return isTransient(errno)
	}
	return false
}

func isTransient(e syscall.Errno) bool {
	switch e {
	case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN, unix.ENETDOWN,
		unix.EMSGSIZE, unix.EPERM, unix.EACCES, unix.ENOBUFS, unix.EINVAL, unix.EAFNOSUPPORT, unix.EADDRNOTAVAIL:
		return true
	}
	return false
}

// sockaddrToAddrPort reads a sockaddr_in or sockaddr_in6 without allocating
// (a scoped IPv6 address allocates its zone name).
func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), ntohs(sa4.Port))
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr)
		if a.Is4In6() {
			// An IPv4 peer of a dual-stack socket: one address has one
			// form everywhere (roaming, caps, logs, the state file).
			// Writing it back on this socket maps it again.
			return netip.AddrPortFrom(a.Unmap(), ntohs(sa.Port))
		}
		if sa.Scope_id != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.Scope_id)); err == nil {
				a = a.WithZone(ifi.Name)
			}
		}
		return netip.AddrPortFrom(a, ntohs(sa.Port))
	}
	return netip.AddrPort{}
}

// addrPortToSockaddr writes ap in the socket's family and returns the length.
func (c *Conn) addrPortToSockaddr(ap netip.AddrPort, sa *unix.RawSockaddrInet6) uint32 {
	a := ap.Addr()
	if !c.v6 {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: htons(ap.Port()), Addr: a.Unmap().As4()}
		return unix.SizeofSockaddrInet4
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: htons(ap.Port()), Addr: a.As16()}
	if z := a.Zone(); z != "" {
		if ifi, err := net.InterfaceByName(z); err == nil {
			sa.Scope_id = uint32(ifi.Index)
		}
	}
	return unix.SizeofSockaddrInet6
}

// The port fields of sockaddrs are in network byte order, stored in a
// native uint16.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}
func htons(p uint16) uint16 {
	var r uint16
	b := (*[2]byte)(unsafe.Pointer(&r))
	b[0], b[1] = byte(p>>8), byte(p)
	return r
}
