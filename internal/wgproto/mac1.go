package wgproto

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strings"

	"golang.org/x/crypto/blake2s"
)

// PublicKeySize is the size of a WireGuard (Curve25519) public key.
const PublicKeySize = 32

// PublicKey is a WireGuard static public key, such as the upstream's.
type PublicKey [PublicKeySize]byte

// WARPPublicKey is Cloudflare WARP's public key as published in wgcf
// profiles. It is what --upstream-public-key takes for a WARP upstream.
const WARPPublicKey = "bmXOC+F1FxEMF9dyiK2H5/1SUtzH0JuVo51h2wPfgyo="

// ErrPublicKeySyntax is returned (wrapped) by ParsePublicKey for text that
// is not the standard base64 of 32 bytes.
var ErrPublicKeySyntax = errors.New("want the standard base64 of a 32-byte WireGuard public key (44 characters ending in '=')")

// ParsePublicKey reads a WireGuard public key in the base64 form wg(8),
// wgcf and WARP profiles print, e.g. WARPPublicKey.
func ParsePublicKey(s string) (PublicKey, error) {
	var k PublicKey
	t := strings.TrimSpace(s)
	b, err := base64.StdEncoding.DecodeString(t)
	if err != nil {
		return k, fmt.Errorf("public key %q: %w: %w", s, ErrPublicKeySyntax, err)
	}
	if len(b) != PublicKeySize {
		return k, fmt.Errorf("public key %q decodes to %d bytes: %w", s, len(b), ErrPublicKeySyntax)
	}
	copy(k[:], b)
	return k, nil
}

// String returns the key in base64, the form ParsePublicKey reads.
func (k PublicKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// MAC1Key is the key of a handshake message's mac1 for one responder:
// BLAKE2s-256("mac1----" || responder's static public key), as in the
// WireGuard whitepaper §5.4.4 and wireguard-go's device/cookie.go.
type MAC1Key [blake2s.Size]byte

// mac1Label is the label WireGuard hashes in front of the public key.
const mac1Label = "mac1----"

// NewMAC1Key derives the mac1 key of the responder whose public key is pub.
func NewMAC1Key(pub PublicKey) MAC1Key {
	h, _ := blake2s.New256(nil) // an unkeyed BLAKE2s never fails
	h.Write([]byte(mac1Label))
	h.Write(pub[:])
	var k MAC1Key
	h.Sum(k[:0])
	return k
}

// MAC1Checker checks the mac1 of handshake initiations addressed to one
// responder (the upstream). A relay that knows the upstream's public key
// drops initiations the upstream would drop anyway, before they cost a
// session or an upstream socket. mac1 filters junk, not people: anyone who
// knows the public key, which is public, can compute it.
//
// A checker is reusable and allocates nothing per call, but it is not safe
// for concurrent use: give each goroutine or actor its own.
type MAC1Checker struct {
	mac     hash.Hash // keyed BLAKE2s-128, Reset between uses
	scratch [InitiationMAC1Offset]byte
	sum     [blake2s.Size]byte
}

// NewMAC1Checker returns a checker for initiations to the responder whose
// mac1 key is key.
func NewMAC1Checker(key MAC1Key) *MAC1Checker {
	mac, err := blake2s.New128(key[:])
	if err != nil {
		// New128 fails only for an empty or over-long key; a MAC1Key is
		// always 32 bytes.
		panic(fmt.Sprintf("wgproto: blake2s.New128: %v", err))
	}
	return &MAC1Checker{mac: mac}
}

// Valid reports whether b is a 148-byte handshake initiation whose mac1
// (bytes 116..131) is right for the checker's responder. It computes mac1
// over bytes 0..115 with bytes 1..3 zeroed, because WARP clients write their
// client ID there after computing the MACs; plain WireGuard sends zeros
// there, so both verify. It never modifies b. The comparison takes the same
// time wherever the MACs differ.
func (c *MAC1Checker) Valid(b []byte) bool {
	if len(b) != InitiationSize || Type(b[0]) != TypeInitiation {
		return false
	}
	copy(c.scratch[:], b[:InitiationMAC1Offset])
	c.scratch[1], c.scratch[2], c.scratch[3] = 0, 0, 0
	c.mac.Reset()
	c.mac.Write(c.scratch[:])
	sum := c.mac.Sum(c.sum[:0])
	return subtle.ConstantTimeCompare(sum[:MACSize], b[InitiationMAC1Offset:InitiationMAC1Offset+MACSize]) == 1
}

// PutMAC1 writes into the handshake initiation b the mac1 that a WireGuard
// initiator would compute for the responder with mac1 key key, counting
// bytes 1..3 as zero as WARP clients do. It is for tests and load
// generators that need initiations the relay accepts without a real
// WireGuard device. It panics if b is not 148 bytes long.
func PutMAC1(b []byte, key MAC1Key) {
	if len(b) != InitiationSize {
		panic(fmt.Sprintf("wgproto.PutMAC1: %d bytes, want %d", len(b), InitiationSize))
	}
	c := NewMAC1Checker(key)
	copy(c.scratch[:], b[:InitiationMAC1Offset])
	c.scratch[1], c.scratch[2], c.scratch[3] = 0, 0, 0
	c.mac.Write(c.scratch[:])
	copy(b[InitiationMAC1Offset:InitiationMAC1Offset+MACSize], c.mac.Sum(c.sum[:0]))
}
