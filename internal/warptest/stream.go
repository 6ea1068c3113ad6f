package warptest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
)

// Stream is the deterministic byte stream that the edge's source sends and its
// sink expects: ChaCha8 keyed by a 64-bit seed. Both ends generate it, so every
// byte that crosses the tunnel is checked, not only a final checksum.
type Stream struct {
	r *rand.ChaCha8
}

// NewStream returns the stream for seed.
func NewStream(seed uint64) *Stream {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	copy(key[8:], "udpfwd/warptest/stream/")
	return &Stream{r: rand.NewChaCha8(key)}
}

// Read fills p with the next len(p) bytes of the stream; it never fails.
func (s *Stream) Read(p []byte) (int, error) {
	return s.r.Read(p)
}

// verifier compares received bytes with the stream, byte for byte.
type verifier struct {
	s    *Stream
	want []byte
	off  int64
}

func newVerifier(seed uint64) *verifier {
	return &verifier{s: NewStream(seed)}
}

// check verifies that p is the next part of the stream.
func (v *verifier) check(p []byte) error {
	if cap(v.want) < len(p) {
		v.want = make([]byte, len(p))
	}
	want := v.want[:len(p)]
	_, _ = v.s.Read(want)
	if !bytes.Equal(p, want) {
		for i := range p {
			if p[i] != want[i] {
				return fmt.Errorf("warptest: stream differs at byte %d: got %#02x, want %#02x", v.off+int64(i), p[i], want[i])
			}
		}
	}
	v.off += int64(len(p))
	return nil
}

// The services' wire protocol. A client opens a TCP connection to a service
// port and, for the source and the sink, first sends a request header: the
// size and the stream seed, both big-endian uint64. The source then sends that
// many bytes of the stream; the sink reads that many bytes, verifies them and
// answers with a sinkReply.
const (
	requestHeaderLen = 16
	// sinkReplyLen: one status byte (sinkOK or sinkMismatch) and the number of
	// bytes that matched, big-endian uint64.
	sinkReplyLen = 9
	sinkOK       = 1
	sinkMismatch = 0
)

func putRequest(b []byte, size int64, seed uint64) {
	binary.BigEndian.PutUint64(b[0:8], uint64(size))
	binary.BigEndian.PutUint64(b[8:16], seed)
}

func parseRequest(b []byte) (size int64, seed uint64) {
	return int64(binary.BigEndian.Uint64(b[0:8])), binary.BigEndian.Uint64(b[8:16])
}

func putUint64(b []byte, v uint64) { binary.BigEndian.PutUint64(b, v) }

func getUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }
