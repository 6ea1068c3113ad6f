package wgproto

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ClientID is the 3-byte WARP client ID from header bytes 1..3, in header
// order. It is a comparable value, usable as a map key.
type ClientID [3]byte

// IsZero reports whether the ID is all zero bytes, which plain WireGuard
// sends and the relay refuses.
func (c ClientID) IsZero() bool { return c == ClientID{} }

// String returns the ID as 6 lower-case hex digits in header order, e.g. "a81a15".
func (c ClientID) String() string { return hex.EncodeToString(c[:]) }

// Base64 returns the ID in the form WARP tools print it as client_id, e.g. "qBoV".
func (c ClientID) Base64() string { return base64.StdEncoding.EncodeToString(c[:]) }

// Triple returns the ID as the decimal list sing-box and Xray call
// "reserved", e.g. "[168, 26, 21]".
func (c ClientID) Triple() string { return fmt.Sprintf("[%d, %d, %d]", c[0], c[1], c[2]) }

// ErrClientIDSyntax is returned (wrapped) by ParseClientID for text that is
// none of the accepted forms.
var ErrClientIDSyntax = errors.New("want 4-character base64 (qBoV), 6 hex digits (a81a15) or a decimal triple (168,26,21)")

// ParseClientID reads a client ID in any of the forms WARP tools print:
// 4-character base64 ("qBoV"), 6 hex digits ("a81a15", optionally "0x"
// prefixed) or a decimal triple ("168,26,21", "[168, 26, 21]"). A zero ID is
// refused because the relay drops it.
func ParseClientID(s string) (ClientID, error) {
	var id ClientID
	t := strings.TrimSpace(s)
	switch {
	case strings.ContainsAny(t, ", ") || strings.HasPrefix(t, "["):
		t = strings.TrimSuffix(strings.TrimPrefix(t, "["), "]")
		parts := strings.FieldsFunc(t, func(r rune) bool { return r == ',' || r == ' ' })
		if len(parts) != 3 {
			return id, fmt.Errorf("client ID %q: %w", s, ErrClientIDSyntax)
		}
		for i, p := range parts {
			n, err := strconv.ParseUint(p, 10, 8)
			if err != nil {
				return id, fmt.Errorf("client ID %q: byte %d is not 0..255: %w", s, i+1, ErrClientIDSyntax)
			}
			id[i] = byte(n)
		}
	case len(t) == 4:
		b, err := base64.StdEncoding.DecodeString(t)
		if err != nil || len(b) != 3 {
			return id, fmt.Errorf("client ID %q: %w", s, ErrClientIDSyntax)
		}
		copy(id[:], b)
	case len(t) == 6 || (len(t) == 8 && (strings.HasPrefix(t, "0x") || strings.HasPrefix(t, "0X"))):
		b, err := hex.DecodeString(t[len(t)-6:])
		if err != nil {
			return id, fmt.Errorf("client ID %q: %w", s, ErrClientIDSyntax)
		}
		copy(id[:], b)
	default:
		return id, fmt.Errorf("client ID %q: %w", s, ErrClientIDSyntax)
	}
	if id.IsZero() {
		return id, fmt.Errorf("client ID %q is zero: the relay drops zero IDs", s)
	}
	return id, nil
}

// MarshalText writes the ID as String does, 6 hex digits ("a81a15"), so
// that files and JSON carry the form logs show.
func (c ClientID) MarshalText() ([]byte, error) {
	b := make([]byte, hex.EncodedLen(len(c)))
	hex.Encode(b, c[:])
	return b, nil
}

// UnmarshalText reads the form MarshalText writes: exactly 6 hex digits.
// Unlike ParseClientID it accepts no other form, and it accepts the zero ID,
// so that what was written reads back as it was; whoever uses the ID decides
// whether zero is allowed.
func (c *ClientID) UnmarshalText(text []byte) error {
	var id ClientID
	if len(text) != hex.EncodedLen(len(id)) {
		return fmt.Errorf("client ID %q: want 6 hex digits", text)
	}
	if _, err := hex.Decode(id[:], text); err != nil {
		return fmt.Errorf("client ID %q: want 6 hex digits", text)
	}
	*c = id
	return nil
}
