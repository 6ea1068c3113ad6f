package cluster

import (
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/udpfwd/udpfwd/actors/cluster/clusterpb"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// TestRemoteLimits checks the arithmetic that keeps a gRPC message of
// remote under the limit both ends accept: the largest Batch we build fits
// maxBatchMessage, and remote's writer packs at most remoteWriterBatch
// messages into one gRPC message.
func TestRemoteLimits(t *testing.T) {
	b := udpio.GetBatch()
	defer b.Release()
	for range udpio.MaxBatch {
		buf := udpio.GetBuffer()
		b.Add(udpio.Datagram{Buf: buf, N: udpio.BufferSize, Addr: netip.MustParseAddrPort("[2001:db8::1]:65535")})
	}
	long := strings.Repeat("$", 64) // process ids are short ("$123"); allow long ones
	m := &clusterpb.Batch{Seq: ^uint64(0), Target: long, Client: []byte{1, 2, 3}, Listen: make([]byte, addrSize), ReplyTo: long, Reply: true}
	encodeBatch(m, b)
	if size := proto.Size(m); size > maxBatchMessage-1024 {
		t.Fatalf("a full batch encodes to %d bytes, more than maxBatchMessage (%d) leaves for remote's envelope", size, maxBatchMessage)
	}
	if remoteWriterBatch*maxBatchMessage > grpcMaxMessage {
		t.Fatalf("%d messages of %d bytes exceed the gRPC limit %d", remoteWriterBatch, maxBatchMessage, grpcMaxMessage)
	}
	if linkWindow%ackEvery != 0 || linkWindow < ackEvery {
		t.Fatalf("linkWindow %d must be a multiple of ackEvery %d, or a full window may wait for an acknowledgement that never comes", linkWindow, ackEvery)
	}
}
