package admin

import (
	"net"
	"testing"
)

// With a wildcard listening address there is no one "own address": any IP
// literal is answered (a rebinding page sends a name), names are not.
func TestHostPolicyWildcard(t *testing.T) {
	for _, ln := range []net.Addr{
		&net.TCPAddr{IP: net.IPv4zero, Port: 9090},
		&net.TCPAddr{IP: net.IPv6unspecified, Port: 9090},
	} {
		p := newHostPolicy(ln, nil)
		tests := []struct {
			host string
			want bool
		}{
			{"192.0.2.7:9090", true},
			{"[2001:db8::7]:9090", true},
			{"localhost:9090", true},
			{"", true},
			{"attacker.example:9090", false},
			{"192.0.2.7.attacker.example", false},
		}
		for _, tt := range tests {
			if got := p.allows(tt.host); got != tt.want {
				t.Errorf("listening on %v: Host %q allowed = %v, want %v", ln, tt.host, got, tt.want)
			}
		}
	}
}

// The session cap's margin counts limits.AdminFiles for the admin
// listener: its caps must add up to it, or the listener could take files
// the sessions were promised.
func TestMaxFilesIsTheMargin(t *testing.T) {
	if got := 1 + DefaultMaxConns + maxScrapesInFlight; got != MaxFiles {
		t.Errorf("the listening socket, %d connections and %d scrapes use %d files; MaxFiles (limits.AdminFiles) says %d",
			DefaultMaxConns, maxScrapesInFlight, got, MaxFiles)
	}
}
