package udpio

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// FD returns c's descriptor number, for tests that watch the kernel reuse
// it.
func FD(c *Conn) int {
	var n int
	c.rc.Control(func(fd uintptr) { n = int(fd) })
	return n
}

// QueuedBytes returns the size of the datagram at the head of c's receive
// queue (SIOCINQ), 0 if the queue is empty.
func QueuedBytes(c *Conn) (int, error) {
	var n int
	var err error
	if cerr := c.rc.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); cerr != nil {
		return 0, cerr
	}
	return n, err
}

// Settle waits until no handler call for tok is under way: after Remove(tok)
// and Settle, a call for tok would be one the poller started after Remove
// returned, which it must never do.
func (p *Poller[T]) Settle(tok PollToken) {
	for PollToken(p.current.Load()) == tok {
		runtime.Gosched()
	}
}
