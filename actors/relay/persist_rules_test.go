package relay

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/udpfwd/udpfwd/internal/state"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// checkRestore keeps a saved session that obeys today's configuration,
// re-binds one whose upstream socket it would not bind, and drops one whose
// upstream is not the configured one.
func TestCheckRestore(t *testing.T) {
	ap := netip.MustParseAddrPort
	saved := func(local, up, upCfg string) state.Session {
		s := state.Session{Client: wgproto.ClientID{1, 2, 3}, UpstreamConfig: upCfg}
		if local != "" {
			s.UpstreamLocal = ap(local)
		}
		if up != "" {
			s.Upstream = ap(up)
		}
		return s
	}
	const literal = "162.159.192.1:2408"
	const name = "engage.cloudflareclient.com:2408"
	v4 := restoreRules{upstream: literal}
	ranged := restoreRules{upstream: literal, ports: [2]uint16{40000, 40999}}
	bound := restoreRules{upstream: literal, bind: netip.MustParseAddr("198.51.100.2")}
	anyBind := restoreRules{upstream: literal, bind: netip.IPv4Unspecified()}
	byName := restoreRules{upstream: name}
	for _, tt := range []struct {
		name   string
		s      state.Session
		rules  restoreRules
		rebind string // part of the reason; "" keeps the port
		drop   string // part of the error; "" keeps the session
	}{
		{"as saved", saved("192.0.2.1:53123", literal, literal), v4, "", ""},
		{"in the range", saved("0.0.0.0:40000", literal, literal), ranged, "", ""},
		{"last port of the range", saved("0.0.0.0:40999", literal, literal), ranged, "", ""},
		{"below the range", saved("0.0.0.0:53", literal, literal), ranged, "outside upstream_ports 40000-40999", ""},
		{"above the range", saved("0.0.0.0:41000", literal, literal), ranged, "outside upstream_ports", ""},
		{"on upstream_bind", saved("198.51.100.2:53123", literal, literal), bound, "", ""},
		{"not on upstream_bind", saved("192.0.2.1:53123", literal, literal), bound, "upstream_bind is now 198.51.100.2", ""},
		{"upstream_bind any address", saved("192.0.2.1:53123", literal, literal), anyBind, "", ""},
		{"v4-mapped on upstream_bind", saved("[::ffff:198.51.100.2]:53123", literal, literal), bound, "", ""},
		{"no port saved", saved("", literal, literal), v4, "no upstream port", ""},
		{"port 0 saved", saved("0.0.0.0:0", literal, literal), v4, "no upstream port", ""},
		{"another upstream configured", saved("192.0.2.1:53123", literal, literal), restoreRules{upstream: "162.159.192.2:2408"}, "", "saved for upstream"},
		{"another address than the configured one", saved("192.0.2.1:53123", "127.0.0.1:2408", literal), v4, "", "is not the configured"},
		{"another port than the configured one", saved("192.0.2.1:53123", "162.159.192.1:53", literal), v4, "", "configured port 2408"},
		{"v4-mapped configured address", saved("192.0.2.1:53123", "[::ffff:162.159.192.1]:2408", literal), v4, "", ""},
		{"a name: any address it gave", saved("192.0.2.1:53123", "162.159.193.7:2408", name), byName, "", ""},
		{"a name: not another port", saved("192.0.2.1:53123", "162.159.193.7:500", name), byName, "", "configured port 2408"},
		{"a name: not the unspecified address", saved("192.0.2.1:53123", "0.0.0.0:2408", name), byName, "", "not one to connect to"},
		{"a name: not multicast", saved("192.0.2.1:53123", "224.0.0.1:2408", name), byName, "", "not one to connect to"},
		{"no upstream address", saved("192.0.2.1:53123", "", literal), v4, "", "not one to connect to"},
		{"zero client ID", func() state.Session {
			s := saved("192.0.2.1:53123", literal, literal)
			s.Client = wgproto.ClientID{}
			return s
		}(), v4, "", "zero"},
		{"dropped rather than re-bound", saved("0.0.0.0:53", "127.0.0.1:2408", literal), ranged, "", "is not the configured"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rebind, err := checkRestore(tt.s, tt.rules)
			switch {
			case tt.drop != "":
				if err == nil || !strings.Contains(err.Error(), tt.drop) {
					t.Fatalf("checkRestore = %q, %v; want dropped: %q", rebind, err, tt.drop)
				}
			case err != nil:
				t.Fatalf("dropped: %v", err)
			case tt.rebind == "" && rebind != "":
				t.Fatalf("re-bound (%s), want kept as saved", rebind)
			case !strings.Contains(rebind, tt.rebind):
				t.Fatalf("rebind = %q, want %q", rebind, tt.rebind)
			}
		})
	}
}
