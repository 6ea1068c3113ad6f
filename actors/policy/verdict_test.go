package policy_test

import (
	"net/netip"
	"testing"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// AllowLists says what the allow-list policies say.
func TestAllowLists(t *testing.T) {
	ip := netip.MustParseAddr
	tests := []struct {
		name    string
		clients []wgproto.ClientID
		allow   []netip.Prefix
		deny    []netip.Prefix
		client  wgproto.ClientID
		from    netip.Addr
		want    string
	}{
		{"no lists", nil, nil, nil, idA, ip("192.0.2.1"), ""},
		{"listed client", []wgproto.ClientID{idA}, nil, nil, idA, ip("192.0.2.1"), ""},
		{"other client", []wgproto.ClientID{idA}, nil, nil, idB, ip("192.0.2.1"), messages.RefusedClientNotAllowed},
		{"allowed source", nil, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, nil, idA, ip("::ffff:192.0.2.1"), ""},
		{"source on no allow-list", nil, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, nil, idA, ip("198.51.100.1"), messages.RefusedSourceNotAllowed},
		{"denied source", nil, nil, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, idA, ip("192.0.2.1"), messages.RefusedSourceDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := policy.AllowLists(tt.clients, tt.allow, tt.deny)(tt.client, tt.from); got != tt.want {
				t.Errorf("verdict %q, want %q", got, tt.want)
			}
		})
	}
}
