package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// PortRange is an inclusive range of UDP ports, such as 40000-40999, that
// upstream sockets bind to so that a firewall rule can name them. The zero
// value means "any port the kernel chooses".
type PortRange struct {
	First, Last uint16
}

// IsZero reports whether no range is set.
func (r PortRange) IsZero() bool { return r == PortRange{} }

// Size is the number of ports in the range; 0 when unset.
func (r PortRange) Size() int {
	if r.IsZero() || r.Last < r.First {
		return 0
	}
	return int(r.Last) - int(r.First) + 1
}

// Contains reports whether port p is in the range.
func (r PortRange) Contains(p uint16) bool { return !r.IsZero() && r.First <= p && p <= r.Last }

// String returns "first-last", or one port when the range holds one.
func (r PortRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// ParsePortRange reads "40000-40999" or a single port "40000". Ports are
// 1..65535 and the first is not above the last.
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	if !isRange {
		hi = lo
	}
	first, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	last, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if err1 != nil || err2 != nil || first == 0 || last == 0 {
		return PortRange{}, fmt.Errorf("%q is not a port range like 40000-40999 (ports 1..65535)", s)
	}
	if first > last {
		return PortRange{}, fmt.Errorf("%q: the first port is above the last", s)
	}
	return PortRange{First: uint16(first), Last: uint16(last)}, nil
}

// byteUnits are the suffixes ParseByteSize accepts, all powers of 1024 as
// in nginx ("4m" is 4 MiB). KB and MB are refused as ambiguous.
var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"b", 1},
}

// ParseByteSize reads a size in bytes: a plain number ("4194304") or a
// number with a binary suffix: KiB, MiB, GiB, or nginx's k, m, g (also
// powers of 1024), in any case. "KB" and "MB" are refused because they
// are read as powers of 1000 by some tools and 1024 by others.
func ParseByteSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if strings.HasSuffix(t, "kb") || strings.HasSuffix(t, "mb") || strings.HasSuffix(t, "gb") {
		return 0, fmt.Errorf("%q: write KiB, MiB or GiB (powers of 1024) or plain bytes", s)
	}
	mult := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a size (bytes, or with a KiB, MiB or GiB suffix)", s)
	}
	return n * mult, nil
}

// FormatByteSize writes n with the largest binary suffix that divides it
// exactly ("4MiB"), else as plain bytes. ParseByteSize reads it back.
func FormatByteSize(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// FormatDuration writes d as time.Duration.String does, without the zero
// units it appends ("10m" rather than "10m0s"). time.ParseDuration reads it
// back.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// PublicKey is a WireGuard (Curve25519) public key. The zero value means
// "not set".
type PublicKey [32]byte

// IsZero reports whether the key is unset.
func (k PublicKey) IsZero() bool { return k == PublicKey{} }

// String returns the key in standard base64, as WireGuard configurations
// write it.
func (k PublicKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// ErrPublicKeySyntax is returned (wrapped) by ParsePublicKey for text that
// is not 32 bytes of standard base64.
var ErrPublicKeySyntax = errors.New("want 32 bytes in base64 (44 characters ending in '='), as in a WireGuard [Peer] PublicKey")

// ParsePublicKey reads a WireGuard public key in standard base64. An
// all-zero key is refused: no peer has it.
func ParsePublicKey(s string) (PublicKey, error) {
	var k PublicKey
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("public key %q: %w", s, ErrPublicKeySyntax)
	}
	copy(k[:], b)
	if k.IsZero() {
		return k, fmt.Errorf("public key %q is all zero", s)
	}
	return k, nil
}
