package udpio

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PollMode says how a Poller's loop waits for ready sockets.
type PollMode int

const (
	// PollNetpoller parks the loop goroutine in Go's netpoller on the
	// epoll descriptor (os.NewFile, then SyscallConn().Read) and collects
	// the ready sockets with epoll_wait(timeout 0). No thread is blocked
	// for the loop: the runtime wakes it like any network goroutine, from
	// the one epoll_wait it already makes.
	PollNetpoller PollMode = iota
	// PollBlocking blocks the loop goroutine's thread in epoll_wait. The
	// runtime hands the loop's P to another thread while it waits.
	PollBlocking
)

// String names the mode as benchmarks print it.
func (m PollMode) String() string {
	switch m {
	case PollNetpoller:
		return "netpoller"
	case PollBlocking:
		return "blocking"
	}
	return fmt.Sprintf("PollMode(%d)", int(m))
}

// DefaultPollEvents is how many ready sockets one round of a Poller takes
// at most. Sockets still ready after a round are reported again by the
// next (the poller's epoll set is level-triggered), after those that
// became ready meanwhile, so a busy socket cannot starve the others.
const DefaultPollEvents = 128

// PollerConfig configures a Poller.
type PollerConfig struct {
	// Mode says how the loop waits; the zero value is PollNetpoller.
	Mode PollMode
	// LockThread wires the loop goroutine to its OS thread
	// (runtime.LockOSThread); only with PollBlocking.
	LockThread bool
	// Events bounds the ready sockets taken per round; 0 means
	// DefaultPollEvents.
	Events int
}

// Validate reports a configuration NewPoller cannot use.
func (c PollerConfig) Validate() error {
	if c.Mode != PollNetpoller && c.Mode != PollBlocking {
		return fmt.Errorf("poller: unknown mode %d", int(c.Mode))
	}
	if c.LockThread && c.Mode != PollBlocking {
		return errors.New("poller: LockThread needs PollBlocking")
	}
	if c.Events < 0 || c.Events > 1<<16 {
		return fmt.Errorf("poller: %d events per round, want 0..65536", c.Events)
	}
	return nil
}

// PollToken names one registration of a Conn with a Poller. The zero
// token names nothing. A token is never reused: a slot's generation tells
// a removed registration from the next one in the same slot.
type PollToken uint64

func pollToken(idx, gen uint32) PollToken { return PollToken(uint64(gen)<<32 | uint64(idx)) }

func (t PollToken) split() (idx, gen uint32) { return uint32(t), uint32(t >> 32) }

// Ready is what a Poller hands its handler for one registered socket. It
// is valid only during the call; the handler takes Batch and must not keep
// the Ready itself.
type Ready[T any] struct {
	// Owner is the value given to Add with the socket (the session).
	Owner T
	// Batch holds the datagrams read from the socket's peer, at most
	// MaxBatch, or is nil. The handler owns it from now on: it passes it
	// on or releases it. Datagrams larger than BufferSize are marked
	// Truncated.
	Batch *Batch
	// Foreign is how many datagrams from sources other than the
	// connected peer were discarded (only possible for datagrams queued
	// before the socket was connected); it replaces Conn.TakeForeign for
	// a polled socket.
	Foreign int
	// Err is a read error. Errors that the kernel reports for an earlier
	// send (ECONNREFUSED after an ICMP port unreachable; IsTransient) leave
	// the socket registered; any other error, net.ErrClosed included,
	// removes it.
	Err error
	// Removed says the poller removed the registration (the socket was
	// closed or failed): the handler is not called for it again, and
	// Remove of its token reports false.
	Removed bool
}

// Poller waits on many connected UDP sockets at once with one epoll set
// and one loop goroutine, and reads the ready ones in batches with
// recvmmsg, so that registered sockets cost no goroutine and an idle one
// no wake-up at all. It is meant for the upstream sockets of a worker's
// sessions: each session registers its socket with itself as owner, and
// the handler hands every Batch to the owner.
//
// The loop goroutine (RoutinePollLoop) runs every round the same way:
// take at most Events ready sockets from epoll, read at most one batch
// (MaxBatch datagrams) from each, then call the handler for each in turn.
// The handler runs on the loop goroutine, without the poller's lock: it
// should pass the batch on (an actor Send) and return. It may call Add and
// Remove, directly or through what it runs: an actor that runs inline on
// the loop goroutine may end its owner (a session that fails while it
// handles its replies) or open another. It must not call Close, which waits
// for the loop. Once Remove returns, the poller starts no handler call for
// that token again; a call already under way, the one Remove was called
// from or one on the loop goroutine at the same moment, is not waited for.
// Once Close returns, the handler is never called at all.
//
// A registered Conn is read by the poller only: its owner may write to it
// at any time, and may close it at any time, before or after Remove. The
// loop reads a socket through the Conn's RawConn, which keeps the
// descriptor open for the length of the system call and fails once the
// Conn is closed, so it never reads a descriptor number the kernel has
// given to another socket; epoll registrations go the same way.
//
// Add, Remove and Len may be called from any goroutine, the handler's
// included; Close from any but the handler's.
type Poller[T any] struct {
	cfg    PollerConfig
	handle func(*Ready[T])
	epfd   int
	file   *os.File        // PollNetpoller: the epoll descriptor, known to Go's netpoller
	erc    syscall.RawConn // its RawConn
	wake   int             // eventfd in the set; written by Close
	done   chan struct{}

	mu     sync.Mutex
	slots  []pollSlot[T]
	free   []uint32
	live   int
	closed bool
	// current is the token of the handler call under way, 0 between
	// calls: stored under mu as the loop starts a call, so that a test
	// can tell a call Remove did not wait for from one started after.
	current atomic.Uint64

	// Owned by the loop goroutine.
	events []unix.EpollEvent
	nev    int
	werr   error
	waitFn func(fd uintptr) bool
	work   []pollWork
	rb     *Batch // read scratch: every slot has a buffer attached
	rd     pollRead
	ready  Ready[T]
}

// wakeIndex is the event data (Fd: -1) of the eventfd that ends the loop;
// no slot has it.
const wakeIndex = ^uint32(0)

type pollSlot[T any] struct {
	conn  *Conn // nil when the slot is free
	owner T
	gen   uint32
}

// pollWork is one ready socket within a round.
type pollWork struct {
	idx, gen uint32
	conn     *Conn
	batch    *Batch
	foreign  int
	err      error
}

// pollRead is one non-blocking recvmmsg, bound once to RawConn.Read.
type pollRead struct {
	hdrs  *unix.Mmsghdr
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

func (r *pollRead) call(fd uintptr) bool {
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(r.hdrs)), MaxBatch, unix.MSG_DONTWAIT, 0, 0)
	r.n, r.errno = int(n), e
	if e != 0 {
		r.n = 0
	}
	return true // never wait in Go's netpoller: epoll said the socket was ready
}

// NewPoller starts a poller whose loop calls handle for every socket that
// had something to report. Close it to stop the loop.
func NewPoller[T any](cfg PollerConfig, handle func(*Ready[T])) (*Poller[T], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if handle == nil {
		return nil, errors.New("poller: nil handler")
	}
	if cfg.Events == 0 {
		cfg.Events = DefaultPollEvents
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("poller: epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("poller: eventfd: %w", err)
	}
	p := &Poller[T]{cfg: cfg, handle: handle, epfd: epfd, wake: wake, done: make(chan struct{}),
		events: make([]unix.EpollEvent, cfg.Events), work: make([]pollWork, 0, cfg.Events)}
	fail := func(err error) (*Poller[T], error) {
		unix.Close(wake)
		if p.file != nil {
			p.file.Close()
		} else {
			unix.Close(epfd)
		}
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1} // wakeIndex
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		return fail(fmt.Errorf("poller: epoll_ctl: %w", err))
	}
	if cfg.Mode == PollNetpoller {
		// A non-blocking descriptor handed to os.NewFile joins Go's
		// netpoller; an epoll descriptor is readable while it has events.
		if err := unix.SetNonblock(epfd, true); err != nil {
			return fail(fmt.Errorf("poller: %w", err))
		}
		p.file = os.NewFile(uintptr(epfd), "udpio-poller")
		if p.erc, err = p.file.SyscallConn(); err != nil {
			return fail(fmt.Errorf("poller: %w", err))
		}
		p.waitFn = p.waitReady
	}
	p.rb = new(Batch)
	for i := range p.rb.store {
		p.rb.store[i].Buf = GetBuffer()
		p.rb.iovs[i].Base = &p.rb.store[i].Buf[0]
		p.rb.iovs[i].SetLen(BufferSize)
		h := &p.rb.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&p.rb.names[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Iov = &p.rb.iovs[i]
		h.SetIovlen(1)
	}
	p.rd.hdrs = &p.rb.hdrs[0]
	p.rd.fn = p.rd.call
	go p.loop()
	return p, nil
}

// Add registers c, whose datagrams the handler then receives with owner.
// c must be connected (Dial) for the foreign-source filter to apply, and
// must not be read by anyone else while registered.
func (p *Poller[T]) Add(c *Conn, owner T) (PollToken, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, fmt.Errorf("poller: add: %w", net.ErrClosed)
	}
	var idx uint32
	if n := len(p.free); n > 0 {
		idx = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		if len(p.slots) >= int(wakeIndex) {
			return 0, errors.New("poller: add: too many sockets")
		}
		idx = uint32(len(p.slots))
		p.slots = append(p.slots, pollSlot[T]{})
	}
	s := &p.slots[idx]
	s.gen++
	if s.gen == 0 {
		s.gen = 1
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(idx), Pad: int32(s.gen)}
	var cerr error
	err := c.rc.Control(func(fd uintptr) { cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev) })
	if err == nil {
		err = cerr
	}
	if err != nil {
		p.free = append(p.free, idx)
		return 0, fmt.Errorf("poller: add %v: %w", c.LocalAddr(), err)
	}
	s.conn, s.owner = c, owner
	p.live++
	return pollToken(idx, s.gen), nil
}

// Remove ends the registration tok names and reports whether it was
// registered. After it returns the poller starts no handler call for tok
// again, and releases what it read for tok meanwhile; it does not wait for
// a call already under way (see Poller), so that the handler, or an owner
// running inline in it, may call it. The Conn stays open: its owner closes
// it, before or after.
func (p *Poller[T]) Remove(tok PollToken) bool {
	idx, gen := tok.split()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || int(idx) >= len(p.slots) || p.slots[idx].gen != gen || p.slots[idx].conn == nil {
		return false
	}
	p.removeLocked(idx)
	return true
}

// removeLocked frees slot idx. The descriptor leaves the epoll set through
// the Conn's RawConn: if the Conn is closed, that fails and nothing is
// done, because closing removed it from the set already and its number may
// belong to another socket now.
func (p *Poller[T]) removeLocked(idx uint32) {
	s := &p.slots[idx]
	_ = s.conn.rc.Control(func(fd uintptr) { _ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
	var zero T
	s.conn, s.owner = nil, zero
	p.free = append(p.free, idx)
	p.live--
}

// Len is how many sockets are registered.
func (p *Poller[T]) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live
}

// Close stops the loop and waits for it; the handler is not called after
// Close returns. Registered Conns stay open. Close is idempotent.
func (p *Poller[T]) Close() error {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	if already {
		<-p.done
		return nil
	}
	var one = [8]byte{1}
	if _, err := unix.Write(p.wake, one[:]); err != nil && err != unix.EAGAIN {
		return fmt.Errorf("poller: wake the loop: %w", err)
	}
	<-p.done
	unix.Close(p.wake)
	var err error
	if p.file != nil {
		err = p.file.Close()
	} else {
		err = unix.Close(p.epfd)
	}
	p.rb.Reset()
	return err
}

// loop is RoutinePollLoop: wait, read the ready sockets, hand out what was
// read, until Close.
func (p *Poller[T]) loop() {
	defer close(p.done)
	if p.cfg.LockThread {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	for {
		n, err := p.wait()
		if err != nil {
			// The epoll descriptor failed, which only a bug can cause:
			// stop rather than spin. Close still works.
			return
		}
		if p.round(p.events[:n]) {
			return
		}
	}
}

// wait returns how many events p.events holds, blocking until there is one.
func (p *Poller[T]) wait() (int, error) {
	if p.cfg.Mode == PollNetpoller {
		if err := p.erc.Read(p.waitFn); err != nil {
			return 0, err
		}
		return p.nev, p.werr
	}
	for {
		n, err := unix.EpollWait(p.epfd, p.events, -1)
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
}

// waitReady is the RawConn.Read function of PollNetpoller: collect what is
// ready without blocking, or ask the netpoller to wait.
func (p *Poller[T]) waitReady(fd uintptr) bool {
	n, err := unix.EpollWait(int(fd), p.events, 0)
	if err == unix.EINTR || (err == nil && n == 0) {
		return false
	}
	p.nev, p.werr = n, err
	return true
}

// round reads at most one batch from each ready socket, then hands the
// batches out. It reports whether Close asked the loop to stop.
func (p *Poller[T]) round(evs []unix.EpollEvent) (stop bool) {
	p.work = p.work[:0]
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return true
	}
	for i := range evs {
		idx, gen := uint32(evs[i].Fd), uint32(evs[i].Pad)
		if idx == wakeIndex {
			continue // only Close writes it, and p.closed says so
		}
		if int(idx) >= len(p.slots) || p.slots[idx].gen != gen || p.slots[idx].conn == nil {
			continue // stale: removed, or the slot holds a newer registration
		}
		p.work = append(p.work, pollWork{idx: idx, gen: gen, conn: p.slots[idx].conn})
	}
	p.mu.Unlock()

	for i := range p.work {
		p.read(&p.work[i])
	}

	for i := range p.work {
		w := &p.work[i]
		// Each call is decided under the lock, and made without it: the
		// handler may Add or Remove (a session it runs inline may end).
		p.mu.Lock()
		s := &p.slots[w.idx]
		if p.closed || s.gen != w.gen || s.conn == nil {
			p.mu.Unlock()
			// Removed while it was read: what was read is nobody's.
			if w.batch != nil {
				w.batch.Release()
			}
			*w = pollWork{}
			continue
		}
		if w.batch == nil && w.foreign == 0 && w.err == nil {
			p.mu.Unlock()
			*w = pollWork{}
			continue
		}
		r := &p.ready
		r.Owner, r.Batch, r.Foreign, r.Err = s.owner, w.batch, w.foreign, w.err
		if w.err != nil && !IsTransient(w.err) {
			r.Removed = true
			p.removeLocked(w.idx)
		}
		p.current.Store(uint64(pollToken(w.idx, w.gen)))
		p.mu.Unlock()
		p.handle(r)
		p.current.Store(0)
		*r = Ready[T]{}
		*w = pollWork{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// read takes at most one batch from w's socket without blocking: the
// datagrams from its peer go into a pooled Batch (w.batch), each taking
// its buffer along; the read scratch gets fresh buffers for those only.
func (p *Poller[T]) read(w *pollWork) {
	c := w.conn
	if err := c.rc.Read(p.rd.fn); err != nil {
		w.err = err // closed
		return
	}
	switch p.rd.errno {
	case 0:
	case unix.EAGAIN, unix.EINTR:
		return // nothing after all; a level-triggered set reports it again if need be
	default:
		w.err = os.NewSyscallError("recvmmsg", p.rd.errno)
		return
	}
	rb := p.rb
	for i := 0; i < p.rd.n; i++ {
		addr := sockaddrToAddrPort(&rb.names[i])
		rb.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		if c.remote.IsValid() && addr != c.remote {
			w.foreign++ // the buffer stays in the scratch
			continue
		}
		if w.batch == nil {
			w.batch = GetBatch()
		}
		d := &rb.store[i]
		w.batch.Datagrams = append(w.batch.Datagrams, Datagram{
			Buf:       d.Buf,
			N:         int(rb.hdrs[i].Len),
			Addr:      addr,
			Truncated: rb.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0,
		})
		d.Buf = GetBuffer()
		rb.iovs[i].Base = &d.Buf[0]
	}
}
