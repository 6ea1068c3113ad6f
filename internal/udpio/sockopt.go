package udpio

import (
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Settings of an open socket that a reload changes in place, without
// closing it.

// SetBuffers sets the socket's receive and send buffers, as Listen and
// Dial did from Options (zero means DefaultSocketBuffer): the privileged
// options first, then the capped ones. Any goroutine may call it; the
// kernel applies it to the open socket. BufferSizes says what the kernel
// granted.
func (c *Conn) SetBuffers(read, write int) error {
	if read == 0 {
		read = DefaultSocketBuffer
	}
	if write == 0 {
		write = DefaultSocketBuffer
	}
	return c.rc.Control(func(fd uintptr) {
		setBuffer(int(fd), unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, read)
		setBuffer(int(fd), unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, write)
	})
}

// SetGSO turns UDP GSO on or off for the socket's next writes (Options'
// NoGSO at open). On is ignored on a kernel without UDP_SEGMENT. Only the
// writing goroutine may call it: the flag is the writer's, as WriteBatch's
// own switch-off after EIO is.
func (c *Conn) SetGSO(on bool) {
	c.gso = on && gsoSupported(c.rc)
}

// KernelDrops returns how many datagrams the kernel has dropped on this
// socket since it was opened: its drop counter (SO_MEMINFO,
// SK_MEMINFO_DROPS), which grows when a datagram arrives to a full receive
// buffer. Reading it costs one system call and nothing on the datagram
// path, unlike SO_RXQ_OVFL, which adds a control message to every read.
// Any goroutine may call it. The kernel's counter is 32 bits wide and
// wraps.
func (c *Conn) KernelDrops() (uint32, error) {
	var mem [unix.SK_MEMINFO_VARS]uint32
	size := uint32(unsafe.Sizeof(mem))
	var errno syscall.Errno
	err := c.rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mem[0])), uintptr(unsafe.Pointer(&size)), 0)
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, fmt.Errorf("getsockopt SO_MEMINFO: %w", errno)
	}
	if size <= unix.SK_MEMINFO_DROPS*4 {
		return 0, fmt.Errorf("getsockopt SO_MEMINFO: %d bytes, no drop counter", size)
	}
	return mem[unix.SK_MEMINFO_DROPS], nil
}
