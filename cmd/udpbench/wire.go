package main

import (
	"encoding/binary"
	"fmt"
)

// WireGuard message types and sizes the generator imitates. udpbench never
// encrypts anything: it only shapes datagrams the way a relay that inspects
// WireGuard headers (type in byte 0, WARP client ID in bytes 1..3) expects.
const (
	msgInitiation   = 1
	msgResponse     = 2
	msgTransport    = 4
	initiationSize  = 148
	responseSize    = 92
	minTransportLen = 32
	// maxTransportLen is the largest multiple of 16 that fits in one IPv4
	// UDP datagram (65507 bytes of payload).
	maxTransportLen = 65504

	offSenderIndex   = 4  // initiation: sender index (LE uint32)
	offReceiverIndex = 4  // transport: receiver index (LE uint32); udpbench stores the run epoch here
	offCounter       = 8  // transport: counter (LE uint64); udpbench stores the sequence number here
	offStamp         = 16 // transport: first payload bytes; udpbench stores the send time (ns, monotonic)
)

// clientID is the 3-byte WARP client ID carried in header bytes 1..3.
type clientID [3]byte

// clientIDFor returns the distinct, non-zero client ID of client number i
// (0-based). Multiplying by an odd constant is a bijection modulo 2^24, so
// distinct i+1 in 1..2^24-1 give distinct non-zero IDs that differ in all
// three bytes, which spreads them over any hash a relay may use.
func clientIDFor(i int) clientID {
	v := uint32(i+1) * 2654435761 & 0xffffff
	return clientID{byte(v), byte(v >> 8), byte(v >> 16)}
}

// String formats the ID as hex in header order, as WARP tools do.
func (id clientID) String() string { return fmt.Sprintf("%02x%02x%02x", id[0], id[1], id[2]) }

// validateSize checks that n is a valid WireGuard transport datagram length
// (at least 32 bytes and a multiple of 16) that fits one UDP datagram.
func validateSize(n int) error {
	switch {
	case n < minTransportLen:
		return fmt.Errorf("size %d: a transport datagram is at least %d bytes", n, minTransportLen)
	case n%16 != 0:
		return fmt.Errorf("size %d: a transport datagram is a multiple of 16 bytes", n)
	case n > maxTransportLen:
		return fmt.Errorf("size %d: larger than one UDP datagram (max %d)", n, maxTransportLen)
	}
	return nil
}

// putInitiation fills b (exactly 148 bytes) with a handshake-initiation
// shaped datagram from client id. The fields after the sender index are a
// fixed filler pattern: no relay under test may verify mac1.
func putInitiation(b []byte, id clientID, sender uint32) {
	if len(b) != initiationSize {
		panic("putInitiation: buffer is not 148 bytes")
	}
	b[0] = msgInitiation
	copy(b[1:4], id[:])
	binary.LittleEndian.PutUint32(b[offSenderIndex:], sender)
	fill(b[8:], sender)
}

// isInitiationFrom reports whether b is a handshake-initiation shaped
// datagram from client id.
func isInitiationFrom(b []byte, id clientID) bool {
	return len(b) == initiationSize && b[0] == msgInitiation && b[1] == id[0] && b[2] == id[1] && b[3] == id[2]
}

// putResponse fills b (exactly 92 bytes) with a handshake-response shaped
// datagram: bytes 1..3 as id, sender index sender (bytes 4..7), receiver
// index receiver (bytes 8..11, the initiation's sender index), a filler
// after them.
func putResponse(b []byte, id clientID, sender, receiver uint32) {
	if len(b) != responseSize {
		panic("putResponse: buffer is not 92 bytes")
	}
	b[0] = msgResponse
	copy(b[1:4], id[:])
	binary.LittleEndian.PutUint32(b[4:], sender)
	binary.LittleEndian.PutUint32(b[8:], receiver)
	fill(b[12:], sender)
}

// responseTo returns the sender index of b if b is a handshake-response
// shaped datagram from client id answering the initiation with sender
// index sender.
func responseTo(b []byte, id clientID, sender uint32) (index uint32, ok bool) {
	if len(b) != responseSize || b[0] != msgResponse || b[1] != id[0] || b[2] != id[1] || b[3] != id[2] ||
		binary.LittleEndian.Uint32(b[8:]) != sender {
		return 0, false
	}
	return binary.LittleEndian.Uint32(b[4:]), true
}

// isHandshakeFrom reports whether b is a handshake-initiation or -response
// shaped datagram of client id: a late answer to a handshake retry.
func isHandshakeFrom(b []byte, id clientID) bool {
	return isInitiationFrom(b, id) || len(b) == responseSize && b[0] == msgResponse && b[1] == id[0] && b[2] == id[1] && b[3] == id[2]
}

// isForeign reports whether b looks like a WireGuard message (type 1..4)
// whose client ID is not id: a relay delivered another client's datagram.
func isForeign(b []byte, id clientID) bool {
	return len(b) >= 4 && b[0] >= 1 && b[0] <= 4 && (b[1] != id[0] || b[2] != id[1] || b[3] != id[2])
}

// putTransportHeader prepares b (len >= 32, multiple of 16) as a transport
// datagram of client id in run epoch, with a filler payload. The per-datagram
// fields are written by setTransportSeq.
func putTransportHeader(b []byte, id clientID, epoch uint32) {
	b[0] = msgTransport
	copy(b[1:4], id[:])
	binary.LittleEndian.PutUint32(b[offReceiverIndex:], epoch)
	fill(b[offStamp+8:], epoch)
}

// setTransportSeq writes the sequence number (counter field) and the send
// time into a datagram prepared by putTransportHeader.
func setTransportSeq(b []byte, seq uint64, stamp int64) {
	binary.LittleEndian.PutUint64(b[offCounter:], seq)
	binary.LittleEndian.PutUint64(b[offStamp:], uint64(stamp))
}

// transportReply is what the generator reads back from an echoed datagram.
type transportReply struct {
	id    clientID
	epoch uint32
	seq   uint64
	stamp int64
}

// parseTransport decodes a datagram written by putTransportHeader and
// setTransportSeq. ok is false for anything else (wrong type or length).
func parseTransport(b []byte, wantLen int) (r transportReply, ok bool) {
	if len(b) != wantLen || len(b) < minTransportLen || b[0] != msgTransport {
		return r, false
	}
	copy(r.id[:], b[1:4])
	r.epoch = binary.LittleEndian.Uint32(b[offReceiverIndex:])
	r.seq = binary.LittleEndian.Uint64(b[offCounter:])
	r.stamp = int64(binary.LittleEndian.Uint64(b[offStamp:]))
	return r, true
}

// fill writes a cheap deterministic pattern so payloads are not all zero.
func fill(b []byte, seed uint32) {
	x := seed | 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
}
