package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/config"
)

func TestParsePortRange(t *testing.T) {
	tests := []struct {
		name, in string
		want     config.PortRange
		err      string
	}{
		{"range", "40000-40999", config.PortRange{First: 40000, Last: 40999}, ""},
		{"spaces", " 1 - 2 ", config.PortRange{First: 1, Last: 2}, ""},
		{"one port", "5000", config.PortRange{First: 5000, Last: 5000}, ""},
		{"full", "1-65535", config.PortRange{First: 1, Last: 65535}, ""},
		{"reversed", "2-1", config.PortRange{}, "above the last"},
		{"zero", "0", config.PortRange{}, "not a port range"},
		{"too big", "1-65536", config.PortRange{}, "not a port range"},
		{"open end", "1-", config.PortRange{}, "not a port range"},
		{"words", "low-high", config.PortRange{}, "not a port range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.ParsePortRange(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParsePortRange(%q) = %v, %v; want error %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParsePortRange(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if back, err := config.ParsePortRange(got.String()); err != nil || back != got {
				t.Errorf("String %q does not read back: %v %v", got.String(), back, err)
			}
		})
	}
	r := config.PortRange{First: 10, Last: 19}
	if r.Size() != 10 || !r.Contains(10) || !r.Contains(19) || r.Contains(20) || r.Contains(9) {
		t.Errorf("PortRange 10-19: Size %d, Contains wrong", r.Size())
	}
	if (config.PortRange{}).Size() != 0 || (config.PortRange{}).Contains(0) {
		t.Error("the zero PortRange is not empty")
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  string
	}{
		{"4194304", 4 << 20, ""},
		{"4MiB", 4 << 20, ""},
		{"4 MiB", 4 << 20, ""},
		{"4mib", 4 << 20, ""},
		{"4m", 4 << 20, ""},
		{"256KiB", 256 << 10, ""},
		{"256k", 256 << 10, ""},
		{"1GiB", 1 << 30, ""},
		{"1g", 1 << 30, ""},
		{"100b", 100, ""},
		{"0", 0, ""},
		{"4MB", 0, "write KiB, MiB or GiB"},
		{"4kb", 0, "write KiB, MiB or GiB"},
		{"-1", 0, "is not a size"},
		{"1.5MiB", 0, "is not a size"},
		{"MiB", 0, "is not a size"},
		{"99999999999GiB", 0, "is not a size"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := config.ParseByteSize(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseByteSize(%q) = %d, %v; want error %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseByteSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestFormatByteSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0"}, {1000, "1000"}, {1024, "1KiB"}, {1536, "1536"}, {4 << 20, "4MiB"}, {3 << 30, "3GiB"}, {(4 << 20) + 1024, "4097KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := config.FormatByteSize(tt.in); got != tt.want {
				t.Fatalf("FormatByteSize(%d) = %q, want %q", tt.in, got, tt.want)
			}
			if back, err := config.ParseByteSize(tt.want); err != nil || back != tt.in {
				t.Errorf("%q reads back as %d, %v", tt.want, back, err)
			}
		})
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{10 * time.Minute, "10m"}, {time.Hour, "1h"}, {90 * time.Minute, "1h30m"}, {90 * time.Second, "1m30s"},
		{time.Hour + time.Second, "1h0m1s"}, {1500 * time.Millisecond, "1.5s"}, {100 * time.Millisecond, "100ms"}, {0, "0s"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := config.FormatDuration(tt.in); got != tt.want {
				t.Fatalf("FormatDuration(%v) = %q, want %q", tt.in, got, tt.want)
			}
			if back, err := time.ParseDuration(tt.want); err != nil || back != tt.in {
				t.Errorf("%q reads back as %v, %v", tt.want, back, err)
			}
		})
	}
}

func TestParsePublicKey(t *testing.T) {
	k, err := config.ParsePublicKey(" " + warpKey + "\n")
	if err != nil || k.String() != warpKey || k.IsZero() {
		t.Fatalf("ParsePublicKey(WARP's key) = %v, %v", k, err)
	}
	tests := []struct{ name, in, err string }{
		{"short", "bmXOC+F1FxEMF9dyiK2H5/1SUtzH0JuVo51h2wPfg==", "want 32 bytes"},
		{"hex", strings.Repeat("ab", 32), "want 32 bytes"},
		{"url alphabet", "bmXOC-F1FxEMF9dyiK2H5_1SUtzH0JuVo51h2wPfgyo=", "want 32 bytes"},
		{"zero", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "all zero"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := config.ParsePublicKey(tt.in); err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("ParsePublicKey(%q): %v, want %q", tt.in, err, tt.err)
			}
		})
	}
}

// FuzzParse feeds arbitrary bytes to Parse: it never panics, and whatever
// it accepts prints as an effective config that reads back the same.
func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	f.Add([]byte(relayAt))
	f.Add([]byte("relays:\n  - {name: a, listen: [127.0.0.1:1], upstream: x:1, security: {allow_clients: [[1,2,3]]}}\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse(data, "fuzz.yaml")
		if err != nil {
			return
		}
		out, err := c.Effective()
		if err != nil {
			t.Fatalf("a parsed config fails Effective: %v", err)
		}
		d, err := config.Parse(out, "effective.yaml")
		if err != nil {
			t.Fatalf("Effective output does not parse: %v\n%s", err, out)
		}
		again, err := d.Effective()
		if err != nil || string(again) != string(out) {
			t.Fatalf("round trip differs (%v):\n%s\n---\n%s", err, out, again)
		}
	})
}
