// Package wgtest builds WireGuard-shaped datagrams for tests and load
// generators: the right type, size, client ID and indexes, with
// deterministic filler where the real protocol has keys and ciphertext.
package wgtest

import (
	"encoding/binary"

	"github.com/udpfwd/udpfwd/internal/wgproto"
)

func header(t wgproto.Type, id wgproto.ClientID, size int) []byte {
	b := make([]byte, size)
	b[0] = byte(t)
	copy(b[1:4], id[:])
	for i := 4; i < size; i++ {
		b[i] = byte(i*7 + int(t))
	}
	return b
}

// Initiation returns a 148-byte handshake initiation with sender index.
// Its filler (the ephemeral key's place, bytes 8..10) carries the client ID
// too: real initiations never repeat (each has a fresh ephemeral key), and
// the relay refuses the same initiation under a second client ID as a
// replay (internal/replay), so two clients' initiations must differ beyond
// bytes 1..3.
func Initiation(id wgproto.ClientID, sender uint32) []byte {
	b := header(wgproto.TypeInitiation, id, wgproto.InitiationSize)
	binary.LittleEndian.PutUint32(b[4:], sender)
	copy(b[8:11], id[:])
	return b
}

// Response returns a 92-byte handshake response from sender to receiver.
func Response(id wgproto.ClientID, sender, receiver uint32) []byte {
	b := header(wgproto.TypeResponse, id, wgproto.ResponseSize)
	binary.LittleEndian.PutUint32(b[4:], sender)
	binary.LittleEndian.PutUint32(b[8:], receiver)
	return b
}

// Cookie returns a 64-byte cookie reply to receiver.
func Cookie(id wgproto.ClientID, receiver uint32) []byte {
	b := header(wgproto.TypeCookie, id, wgproto.CookieSize)
	binary.LittleEndian.PutUint32(b[4:], receiver)
	return b
}

// Transport returns a transport message of size bytes (>= 32, a multiple
// of 16 for a valid one) to receiver with the given counter.
func Transport(id wgproto.ClientID, receiver uint32, counter uint64, size int) []byte {
	b := header(wgproto.TypeTransport, id, size)
	if size >= 16 {
		binary.LittleEndian.PutUint32(b[4:], receiver)
		binary.LittleEndian.PutUint64(b[8:], counter)
	}
	return b
}
