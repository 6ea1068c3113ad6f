// Package udpio moves UDP datagrams in batches: pooled fixed-size buffers,
// batches of datagrams whose ownership moves from actor to actor, and
// sockets that read and write a whole batch with one recvmmsg or sendmmsg
// system call without allocating.
//
// Ownership: a Datagram's Buf belongs to whoever holds the Datagram. Moving
// a Datagram out of a Batch means copying the value and setting the source's
// Buf to nil; whoever ends a datagram's life (writes it or drops it) returns
// its buffer with PutBuffer, or releases the whole Batch.
package udpio

import (
	"net/netip"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BufferSize is the size of one pooled datagram buffer. WireGuard datagrams
// on Internet paths are at most about 1 500 bytes (WARP's default inner MTU
// is 1 280); a datagram larger than this is truncated by the kernel, marked
// Truncated and dropped by the relay, never forwarded cut short.
const BufferSize = 2048

// MaxBatch is the most datagrams one system call moves, and so the capacity
// of a Batch. 64 keeps a batch's buffers (128 KB) in cache while amortising
// the system call; wireguard-go uses 128.
const MaxBatch = 64

// Buffer holds one datagram.
type Buffer [BufferSize]byte

var bufferPool = sync.Pool{New: func() any { return new(Buffer) }}

// GetBuffer takes a buffer from the pool. Its content is undefined.
func GetBuffer() *Buffer { return bufferPool.Get().(*Buffer) }

// PutBuffer returns a buffer to the pool. The caller must not use it again.
func PutBuffer(b *Buffer) {
	if b != nil {
		bufferPool.Put(b)
	}
}

// Datagram is one datagram in a pooled buffer. Addr is its source when read
// and its destination when written (ignored on connected sockets).
type Datagram struct {
	Buf       *Buffer
	N         int
	Addr      netip.AddrPort
	Truncated bool // larger than BufferSize: the kernel cut it
}

// Bytes returns the datagram's payload, aliasing its buffer.
func (d *Datagram) Bytes() []byte { return d.Buf[:d.N] }

// Batch is a pooled batch of up to MaxBatch datagrams together with the
// system-call scratch space to read or write them at once. Use GetBatch and
// Release; a Batch must not be used by two goroutines at once.
//
// The invariant between store and Datagrams: Datagrams is always a window
// of the batch's own store array, never of another array, so appending never
// allocates. A batch being filled (by ReadBatch, Add, or Take as the
// destination) has Datagrams = store[:n]; Take as the source advances it to
// store[k:n], and such a batch is only drained and released, never filled
// again. Every buffer in store belongs to the batch, whether its datagram is
// inside Datagrams or not, and Reset returns them all. So code that drops a
// datagram may simply leave it behind in store (outside Datagrams, as the
// relay's filters do by swapping the kept ones to the front), and code that
// moves one out must copy it and set the Buf left in store to nil.
type Batch struct {
	// Datagrams holds the datagrams in use: a window of store (see above).
	Datagrams []Datagram
	// Listener is the index of the relay's listening socket the datagrams
	// came by, or are to leave by (the relay numbers its listening sockets,
	// and their listener and writer actors, in the order it opens them).
	Listener uint8

	store [MaxBatch]Datagram
	hdrs  [MaxBatch]unix.Mmsghdr
	iovs  [MaxBatch]unix.Iovec
	names [MaxBatch]unix.RawSockaddrInet6
	// For writes with UDP GSO: each message's control buffer (one
	// UDP_SEGMENT option) and how many datagrams the message carries.
	ctrl [MaxBatch][gsoControlSize]byte
	segs [MaxBatch]int
}

var batchPool = sync.Pool{New: func() any {
	b := new(Batch)
	b.Datagrams = b.store[:0]
	return b
}}

// GetBatch takes an empty batch from the pool.
func GetBatch() *Batch { return batchPool.Get().(*Batch) }

// Add appends a datagram, taking over its buffer. It reports false, and takes
// nothing, when the batch is full.
func (b *Batch) Add(d Datagram) bool {
	if len(b.Datagrams) == MaxBatch {
		return false
	}
	b.Datagrams = append(b.Datagrams, d)
	return true
}

// Full reports whether no more datagrams fit.
func (b *Batch) Full() bool { return len(b.Datagrams) == MaxBatch }

// Take moves datagrams from the front of src to the end of b, as many as
// fit, and returns how many it moved. src keeps the rest.
func (b *Batch) Take(src *Batch) int {
	n := min(MaxBatch-len(b.Datagrams), len(src.Datagrams))
	for i := 0; i < n; i++ {
		b.Datagrams = append(b.Datagrams, src.Datagrams[i])
		src.Datagrams[i].Buf = nil
	}
	src.Datagrams = src.Datagrams[n:]
	return n
}

// Trim returns to the pool every buffer the batch holds outside Datagrams:
// after a read, those ReadBatch attached that the kernel did not fill. A
// batch that waits in a queue then holds only the datagrams it carries.
func (b *Batch) Trim() {
	// Datagrams is the window store[from:to] (see Batch).
	from := MaxBatch - cap(b.Datagrams)
	to := from + len(b.Datagrams)
	for i := range b.store {
		if (i < from || i >= to) && b.store[i].Buf != nil {
			bufferPool.Put(b.store[i].Buf)
			b.store[i].Buf = nil
		}
	}
}

// BatchSize is the memory a Batch takes without its buffers.
const BatchSize = int(unsafe.Sizeof(Batch{}))

// Footprint is the memory the batch holds: itself and every buffer in it,
// inside Datagrams or not. A bounded mailbox weighs a queued batch by it.
func (b *Batch) Footprint() int {
	n := 0
	for i := range b.store {
		if b.store[i].Buf != nil {
			n++
		}
	}
	return BatchSize + n*BufferSize
}

// Reset returns every buffer the batch holds to the pool and empties it,
// keeping the batch itself for reuse by its owner.
func (b *Batch) Reset() {
	for i := range b.store {
		if b.store[i].Buf != nil {
			bufferPool.Put(b.store[i].Buf)
		}
		b.store[i] = Datagram{}
	}
	b.Datagrams = b.store[:0]
	b.Listener = 0
}

// Release returns every buffer the batch still holds, and the batch itself,
// to their pools. Datagrams moved out must have had their Buf set to nil.
func (b *Batch) Release() {
	b.Reset()
	batchPool.Put(b)
}
