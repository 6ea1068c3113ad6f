package main

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// defaultSockBuf is the socket buffer size udpbench asks for. The kernel's
// default (208 KB) overflows under bursts of a few hundred datagrams in flight.
const defaultSockBuf = 4 << 20

// setSockBuffers sets SO_RCVBUF and SO_SNDBUF to size bytes, using the
// *FORCE variants (which ignore net.core.[rw]mem_max) when privileged, and
// returns the sizes the kernel reports (it doubles the request for its own
// bookkeeping).
func setSockBuffers(c *net.UDPConn, size int) (rcv, snd int, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, fmt.Errorf("socket buffers: %w", err)
	}
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], size) != nil {
				if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], size); e != nil {
					serr = e
					return
				}
			}
		}
		rcv, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		if serr == nil {
			snd, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
		}
	})
	if cerr != nil {
		return 0, 0, fmt.Errorf("socket buffers: %w", cerr)
	}
	if serr != nil {
		return 0, 0, fmt.Errorf("socket buffers: %w", serr)
	}
	return rcv, snd, nil
}

// batchConn is the batched API of golang.org/x/net's ipv4 and ipv6
// PacketConn (recvmmsg/sendmmsg on Linux). ipv4.Message and ipv6.Message
// are the same type, so one interface covers both families.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// newBatchConn wraps c in the x/net PacketConn of its address family.
func newBatchConn(c *net.UDPConn) batchConn {
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() == nil {
		return ipv6.NewPacketConn(c)
	}
	return ipv4.NewPacketConn(c)
}

// writeBatchAll sends every message in ms with as few WriteBatch calls as
// the kernel allows. A message the kernel refuses outright (n == 0 with an
// error) is skipped and counted in dropped, so one bad destination does not
// stall the rest; the last such error is returned.
func writeBatchAll(bc batchConn, ms []ipv4.Message) (dropped int, err error) {
	for len(ms) > 0 {
		n, werr := bc.WriteBatch(ms, 0)
		if werr != nil {
			if isClosed(werr) {
				return dropped, werr
			}
			err = werr
			if n <= 0 {
				n = 1
				dropped++
			}
		}
		ms = ms[n:]
	}
	return dropped, err
}

// isClosed reports whether err means the socket was closed under us (the
// normal way a reader is told to stop).
func isClosed(err error) bool { return errors.Is(err, net.ErrClosed) }

// mmsgBatch is a reusable array of mmsghdr, one iovec each, for calling
// recvmmsg and sendmmsg directly without allocating per call.
type mmsgBatch struct {
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
}

func newMmsgBatch(max int) *mmsgBatch {
	b := &mmsgBatch{hdrs: make([]unix.Mmsghdr, max), iovs: make([]unix.Iovec, max)}
	for i := range b.hdrs {
		b.hdrs[i].Hdr.Iov = &b.iovs[i]
		b.hdrs[i].Hdr.SetIovlen(1)
	}
	return b
}

// point aims the first min(len(bufs), capacity) headers at bufs (whole
// buffers) and returns how many it prepared.
func (b *mmsgBatch) point(bufs [][]byte) int {
	n := min(len(bufs), len(b.hdrs))
	for i := 0; i < n; i++ {
		b.iovs[i].Base = &bufs[i][0]
		b.iovs[i].SetLen(len(bufs[i]))
		b.hdrs[i].Len = 0
		b.hdrs[i].Hdr.Flags = 0
	}
	return n
}

// lens copies the received lengths of the first n headers into lens; a
// truncated datagram gets -1.
func (b *mmsgBatch) lens(n int, lens []int) {
	for i := 0; i < n; i++ {
		lens[i] = int(b.hdrs[i].Len)
		if b.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0 {
			lens[i] = -1
		}
	}
}

// call is one recvmmsg or sendmmsg (trap) on fd over headers off..off+n.
func (b *mmsgBatch) call(trap, fd uintptr, off, n, flags int) (int, unix.Errno) {
	r, _, e := unix.Syscall6(trap, fd, uintptr(unsafe.Pointer(&b.hdrs[off])), uintptr(n), uintptr(flags), 0, 0)
	return int(r), e
}

// mmsgConn does recvmmsg/sendmmsg on a connected UDP socket without the
// per-datagram address allocations of x/net's ReadBatch: the generator is a
// measuring instrument and should cost as little CPU as possible. It goes
// through syscall.RawConn, so it parks in Go's netpoller and honours read
// deadlines. One mmsgConn serves one goroutine.
type mmsgConn struct {
	rc syscall.RawConn
	b  *mmsgBatch

	// per-call state, used by the callbacks (bound once: no closure
	// allocation per call).
	trap   uintptr
	cnt    int
	flags  int
	n      int
	errno  unix.Errno
	callFn func(fd uintptr) bool
}

// newMmsgConn prepares batches of up to max datagrams on connected socket c.
func newMmsgConn(c *net.UDPConn, max int) (*mmsgConn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("mmsg: %w", err)
	}
	m := &mmsgConn{rc: rc, b: newMmsgBatch(max)}
	m.callFn = m.doCall
	return m, nil
}

func (m *mmsgConn) doCall(fd uintptr) bool {
	n, e := m.b.call(m.trap, fd, 0, m.cnt, m.flags)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false // wait for the netpoller, then call again
	}
	m.n, m.errno = n, e
	if e != 0 {
		m.n = 0
	}
	return true
}

// recv reads up to len(bufs) datagrams into bufs (each buffer's full length
// is offered) and returns how many arrived; lens[i] is the length of
// datagram i (-1 if truncated). It blocks (in the netpoller) until at least
// one arrives or the read deadline passes.
func (m *mmsgConn) recv(bufs [][]byte, lens []int) (int, error) {
	m.trap, m.cnt, m.flags = unix.SYS_RECVMMSG, m.b.point(bufs), unix.MSG_DONTWAIT
	if err := m.rc.Read(m.callFn); err != nil {
		return 0, err
	}
	if m.errno != 0 {
		return 0, fmt.Errorf("recvmmsg: %w", m.errno)
	}
	m.b.lens(m.n, lens)
	return m.n, nil
}

// send writes every datagram in bufs (each buffer whole), looping over
// partial sendmmsg results. It returns how many were sent.
func (m *mmsgConn) send(bufs [][]byte) (int, error) {
	sent := 0
	for sent < len(bufs) {
		m.trap, m.cnt, m.flags = unix.SYS_SENDMMSG, m.b.point(bufs[sent:]), unix.MSG_DONTWAIT
		if err := m.rc.Write(m.callFn); err != nil {
			return sent, err
		}
		if m.errno != 0 {
			return sent, fmt.Errorf("sendmmsg: %w", m.errno)
		}
		sent += m.n
	}
	return sent, nil
}
