package udpio_test

import (
	"testing"

	"github.com/udpfwd/udpfwd/internal/udpio"
)

// After a read of two datagrams a batch holds MaxBatch buffers; Trim gives
// back all but the two, and Footprint counts what it holds, here and after
// the batch's datagrams moved out to another batch by Take.
func TestTrimAndFootprint(t *testing.T) {
	srv := listen(t, "127.0.0.1:0")
	cl := listen(t, "127.0.0.1:0")
	out := udpio.GetBatch()
	for range 2 {
		buf := udpio.GetBuffer()
		out.Add(udpio.Datagram{Buf: buf, N: 100, Addr: srv.LocalAddr()})
	}
	if w := cl.WriteAll(out); w.Dropped != 0 {
		t.Fatalf("send: %v", w.Err)
	}
	out.Release()
	in := readWithin(t, srv)
	for len(in.Datagrams) < 2 { // the two may come in two reads
		more := readWithin(t, srv)
		in.Take(more)
		more.Release()
	}
	full := udpio.BatchSize + udpio.MaxBatch*udpio.BufferSize
	if got := in.Footprint(); got < udpio.BatchSize+2*udpio.BufferSize || got > full {
		t.Fatalf("footprint after a read %d, want between two buffers and %d", got, full)
	}
	in.Trim()
	if got, want := in.Footprint(), udpio.BatchSize+2*udpio.BufferSize; got != want {
		t.Fatalf("footprint after Trim %d, want %d (the batch and its two datagrams)", got, want)
	}
	if in.Datagrams[0].Buf == nil || in.Datagrams[1].Buf == nil || in.Datagrams[0].N != 100 {
		t.Fatal("Trim took a buffer that holds a datagram")
	}
	// A drained source of Take holds nothing more; its window moved.
	dst := udpio.GetBatch()
	dst.Add(udpio.Datagram{Buf: udpio.GetBuffer(), N: 1})
	src := in
	dst.Take(src)
	src.Trim()
	if got := src.Footprint(); got != udpio.BatchSize {
		t.Fatalf("footprint of a drained batch %d, want %d", got, udpio.BatchSize)
	}
	if got := dst.Footprint(); got != udpio.BatchSize+3*udpio.BufferSize {
		t.Fatalf("footprint of the destination %d, want three buffers", got)
	}
	src.Release()
	dst.Release()
}
