package relay

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/udpfwd/udpfwd/internal/state"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// A saved session of a pool is checked against its own endpoint, which must
// be one of the configured ones.
func TestCheckRestorePool(t *testing.T) {
	ap := netip.MustParseAddrPort
	const a, b, name = "162.159.192.1:2408", "162.159.193.1:2408", "engage.cloudflareclient.com:2408"
	rules := restoreRules{upstream: a, more: []string{b, name}}
	saved := func(up, cfg string) state.Session {
		return state.Session{Client: wgproto.ClientID{1, 2, 3}, UpstreamLocal: ap("192.0.2.1:53123"), Upstream: ap(up), UpstreamConfig: cfg}
	}
	for _, tt := range []struct {
		name string
		s    state.Session
		drop string // part of the error; "" keeps it
	}{
		{"the first endpoint", saved(a, a), ""},
		{"the second endpoint", saved(b, b), ""},
		{"a name of the pool", saved("162.159.195.9:2408", name), ""},
		{"the second endpoint's name with the first's address", saved(a, b), "is not the configured " + b},
		{"an endpoint that left the pool", saved("162.159.194.1:2408", "162.159.194.1:2408"), `the relay now has ["` + a + `" "` + b + `" "` + name + `"]`},
		{"a name's endpoint on another port", saved("162.159.195.9:500", name), "configured port 2408"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := checkRestore(tt.s, rules)
			switch {
			case tt.drop == "" && err != nil:
				t.Fatalf("dropped: %v", err)
			case tt.drop != "" && (err == nil || !strings.Contains(err.Error(), tt.drop)):
				t.Fatalf("error %v, want one with %q", err, tt.drop)
			}
		})
	}
}
