package warptest

import "encoding/hex"

// ClientID is the 3-byte client ID that WARP clients write into header bytes
// 1..3 of every WireGuard datagram, in header order.
type ClientID [3]byte

// IsZero reports whether the ID is all zero, as plain WireGuard sends.
func (id ClientID) IsZero() bool { return id == ClientID{} }

// String is the ID in hex, e.g. "a81a15".
func (id ClientID) String() string { return hex.EncodeToString(id[:]) }

// stampID writes id into bytes 1..3 of a WireGuard datagram (if it has them).
func stampID(b []byte, id ClientID) {
	if len(b) >= 4 {
		copy(b[1:4], id[:])
	}
}

// peekID returns bytes 1..3 of a WireGuard datagram, leaving them.
func peekID(b []byte) ClientID {
	var id ClientID
	if len(b) >= 4 {
		copy(id[:], b[1:4])
	}
	return id
}

// takeID returns bytes 1..3 of a WireGuard datagram and zeroes them, so that
// wireguard-go, which wants a little-endian type 1..4 in bytes 0..3, accepts it.
func takeID(b []byte) ClientID {
	var id ClientID
	if len(b) >= 4 {
		copy(id[:], b[1:4])
		b[1], b[2], b[3] = 0, 0, 0
	}
	return id
}
