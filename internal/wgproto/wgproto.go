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
	transportAlign   = 16  // transport payloads are padded to 16 bytes
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
	OK          Verdict = iota
	BadType             // byte 0 is not 1..4 (or the datagram is shorter than 4 bytes)
	BadSize             // the size is wrong for the type
	ZeroClient          // the client ID in bytes 1..3 is zero
	numVerdicts         // keep last
)

// NumVerdicts is the number of distinct verdicts, for sizing counter arrays.
const NumVerdicts = int(numVerdicts)

var verdictNames = [...]string{
	OK:         "ok",
	BadType:    "bad_type",
	BadSize:    "bad_size",
	ZeroClient: "zero_client_id",
}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "unknown"
}

// Parse reads the header of one WireGuard datagram in place. It checks the
// type, the exact size for that type and the client ID, in that order, and
// returns the first failure. It never modifies b and never allocates.
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
		if len(b) < MinTransportSize || len(b)%transportAlign != 0 {
			return h, BadSize
		}
	default:
		return h, BadType
	}
	if word>>8 == 0 {
		return h, ZeroClient
	}
	h.Index = binary.LittleEndian.Uint32(b[4:8])
	return h, OK
}
