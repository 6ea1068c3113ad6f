package warptest

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
)

// Key is a Curve25519 key as WireGuard uses it, private or public.
type Key [32]byte

// GenerateKey returns a fresh random private key.
func GenerateKey() (Key, error) {
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, fmt.Errorf("warptest: generate key: %w", err)
	}
	var k Key
	copy(k[:], priv.Bytes())
	return k, nil
}

// PublicKey returns the public key of the private key k.
func (k Key) PublicKey() Key {
	priv, err := ecdh.X25519().NewPrivateKey(k[:])
	if err != nil {
		// NewPrivateKey fails only on a wrong length, which Key rules out.
		panic(fmt.Sprintf("warptest: X25519 private key: %v", err))
	}
	var pub Key
	copy(pub[:], priv.PublicKey().Bytes())
	return pub
}

// Hex is the key in hex, as wireguard-go's configuration protocol wants it.
func (k Key) Hex() string { return hex.EncodeToString(k[:]) }

// String is the key in base64, as WireGuard tools show it.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }
