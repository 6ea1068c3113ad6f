// Package wgproto holds the facts about WireGuard's message header that the
// relay needs: message types and sizes, the WARP client ID in the reserved
// bytes, and the session indexes. It parses in place, does no I/O and never
// allocates, so it can sit on the hot path of every datagram.
//
// The layout follows the WireGuard whitepaper and wireguard-go's
// device/noise-protocol.go: byte 0 is the message type, bytes 1..3 are
// "reserved" (WARP clients put their client ID there), and bytes 4.. hold
// little-endian indexes.
package wgproto

import (
	"encoding/binary"
)

// Type is a WireGuard message type (header byte 0).
type Type uint8

// The four WireGuard message types.
const (
	TypeInitiation Type = 1
	TypeResponse   Type = 2
	TypeCookie     Type = 3
	TypeTransport  Type = 4
)

// Message sizes, as fixed by the protocol.
const (
	InitiationSize   = 148 // handshake initiation, exactly
	ResponseSize     = 92  // handshake response, exactly
	CookieSize       = 64  // cookie reply, exactly
	MinTransportSize = 32  // transport data: header, counter and a 16-byte tag; a keepalive
)

// Offsets of the MAC fields that WARP clients compute before stamping their
// client ID, so mac1 verifies over the message with bytes 1..3 zeroed.
const (
	InitiationMAC1Offset = 116
	InitiationMAC2Offset = 132
	ResponseMAC1Offset   = 60
	MACSize              = 16
)

func (t Type) String() string {
	switch t {
	case TypeInitiation:
		return "initiation"
	case TypeResponse:
		return "response"
	case TypeCookie:
		return "cookie"
	case TypeTransport:
		return "transport"
	}
	return "unknown"
}

// Header is the parsed fixed part of a WireGuard message. It is a small value
// and is returned by value.
type Header struct {
	Type   Type
	Client ClientID
	// Index is the index at bytes 4..7: the sender index of an initiation or a
	// response, the receiver index of a cookie reply or a transport message.
	Index uint32
	// Receiver is the receiver index of a handshake response (bytes 8..11);
	// zero for the other types.
	Receiver uint32
}

// Verdict says why a datagram was rejected by Parse. OK means it is a
// well-formed WireGuard message with a non-zero client ID.
type Verdict uint8

// Verdicts, in the order Parse checks them.
const (
	OK         Verdict = iota
	BadType            // byte 0 is not 1..4 (or the datagram is shorter than 4 bytes)
	BadSize            // the size is wrong for the type
	ZeroClient         // the client ID in bytes 1..3 is zero
	// WARPType: byte 0 is one of 0xc1..0xc4, which nDPI's Cloudflare WARP
	// dissector reports for the official WARP client's own framing of the
	// four messages (not verified here). It is not WireGuard, but an
	// operator should be able to tell it from junk.
	WARPType
	numVerdicts // keep last
)

// The type bytes nDPI reports for the official WARP client's messages
// (WARPType).
const (
	FirstWARPType = 0xc1
	LastWARPType  = 0xc4
)

// NumVerdicts is the number of distinct verdicts, for sizing counter arrays.
const NumVerdicts = int(numVerdicts)

var verdictNames = [...]string{
	OK:         "ok",
	BadType:    "bad_type",
	BadSize:    "bad_size",
	ZeroClient: "zero_client_id",
	WARPType:   "warp_type",
}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "unknown"
}

// Parse reads the header of one WireGuard datagram in place. It checks the
// type, the exact size for that type and the client ID, in that order, and
// returns the first failure. A datagram refused only for its zero client ID
// (plain WireGuard) comes with its whole header, indexes included, so that
// a relay tracking plain clients can place it. It never modifies b and
// never allocates.
func Parse(b []byte) (Header, Verdict) {
	if len(b) < 4 {
		return Header{}, BadType
	}
	// One little-endian load: the type is the low byte, the client ID the
	// three high bytes in header order.
	word := binary.LittleEndian.Uint32(b)
	h := Header{
		Type:   Type(word & 0xff),
		Client: ClientID{b[1], b[2], b[3]},
	}
	switch h.Type {
	case TypeInitiation:
		if len(b) != InitiationSize {
			return h, BadSize
		}
	case TypeResponse:
		if len(b) != ResponseSize {
			return h, BadSize
		}
		h.Receiver = binary.LittleEndian.Uint32(b[8:12])
	case TypeCookie:
		if len(b) != CookieSize {
			return h, BadSize
		}
	case TypeTransport:
		// Senders pad the payload to a multiple of 16 but never past the
		// tunnel MTU (wireguard-go calculatePaddingSize), so a full-size
		// packet on an MTU such as 1420 gives a datagram of 1452 bytes:
		// only the minimum can be checked.
		if len(b) < MinTransportSize {
			return h, BadSize
		}
	default:
		if t := word & 0xff; t >= FirstWARPType && t <= LastWARPType {
			return h, WARPType
		}
		return h, BadType
	}
	h.Index = binary.LittleEndian.Uint32(b[4:8])
	if word>>8 == 0 {
		return h, ZeroClient
	}
	return h, OK
}

// ReceiverIndex returns the index the upstream assigned that a datagram from a
// client carries, by which a relay finds the session of a client that sends
// no client ID: the receiver index of a transport message or a cookie
// reply (bytes 4..7), or of a handshake response (bytes 8..11, answering an
// initiation the upstream sent). ok is false for a handshake initiation,
// which carries only the client's own sender index.
func (h Header) ReceiverIndex() (index uint32, ok bool) {
	switch h.Type {
	case TypeTransport, TypeCookie:
		return h.Index, true
	case TypeResponse:
		return h.Receiver, true
	}
	return 0, false
}

// SetClient writes id into bytes 1..3 of the WireGuard datagram b (if it
// has them). A relay stamps a client ID this way into what a plain client
// sends upstream: WARP computes mac1 with these bytes zero, so the
// handshake stays valid. Writing the zero ID clears them, as plain
// WireGuard peers (the Linux kernel, wireguard-go) require of what they
// receive.
func SetClient(b []byte, id ClientID) {
	if len(b) >= 4 {
		b[1], b[2], b[3] = id[0], id[1], id[2]
	}
}
