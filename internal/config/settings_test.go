package config_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// twoRelays is a file with a wireguard relay (lines 2-8) and a forward
// relay (lines 9-12).
const twoRelays = `relays:
  - name: warp
    listen: 127.0.0.1:2408
    upstream: 192.0.2.1:2408
    idle_timeout: 1m
    security:
      allow_clients: [qBoV, a81a16]
      client_rate: {datagrams_per_second: 10, bytes_per_second: 1MiB}
  - name: dns
    mode: forward
    listen: 127.0.0.1:5353
    upstream: 192.0.2.53:53
`

func decodeTwo(t *testing.T) *config.File {
	t.Helper()
	f, err := config.Decode([]byte(twoRelays), "u.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestSetFlagOverridesEveryRelay(t *testing.T) {
	f := decodeTwo(t)
	for _, fl := range []struct {
		name   string
		values []string
	}{
		{"idle-timeout", []string{"5m", "2m"}}, // given twice: the last counts
		{"socket-buffer", []string{"8MiB"}},
		{"no-gso", nil},
		{"allow-client", []string{"0a0b0c", "1,2,3"}},
		{"allow-cidr", []string{"192.0.2.0/24, 2001:db8::/32", "203.0.113.7"}},
		{"client-rate", []string{"5000"}},
		{"log-level", []string{"debug"}},
		{"admin", []string{"localhost:9090"}},
	} {
		if err := f.SetFlag(fl.name, fl.values...); err != nil {
			t.Fatalf("--%s %v: %v", fl.name, fl.values, err)
		}
	}
	if w, err := f.Validate(); err != nil || len(w) != 0 {
		t.Fatalf("Validate: %v, warnings %v", err, w)
	}
	warp, dns := f.Relays[0], f.Relays[1]
	checks := []struct {
		what string
		ok   bool
	}{
		{"idle timeout of the wireguard relay", warp.IdleTimeout == 2*time.Minute},
		{"buffers of both", warp.ReadBuffer == 8<<20 && warp.WriteBuffer == 8<<20 && dns.ReadBuffer == 8<<20 && dns.WriteBuffer == 8<<20},
		{"GSO off in both", warp.NoGSO && dns.NoGSO},
		{"client IDs replaced", slices.Equal(warp.Security.AllowClients, []wgproto.ClientID{{0x0a, 0x0b, 0x0c}, {1, 2, 3}})},
		{"CIDRs split on commas", slices.Equal(warp.Security.AllowCIDRs, []netip.Prefix{
			netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("203.0.113.7/32")})},
		{"client rate replaced whole", warp.Security.ClientRate == config.ClientRate{DatagramsPerSecond: 5000}},
		{"forward relay keeps no session settings", dns.IdleTimeout == 0 && dns.Security.IsZero()},
		{"log level", f.Log.Level == "debug"},
		{"admin", f.Admin == "localhost:9090"},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: wrong; relays %+v", c.what, f.Relays)
		}
	}
}

func TestSetFlagMessagesNameTheFlag(t *testing.T) {
	tests := []struct {
		name   string
		flag   string
		values []string
		msg    string // the whole first line, from SetFlag or Validate
	}{
		{"bad value", "socket-buffer", []string{"4"}, `--socket-buffer: "4" is too small (4 bytes): want 4KiB..1GiB; write 4MiB for 4 mebibytes`},
		{"bad value of a wireguard key, only a forward relay", "idle-timeout", []string{"soon"}, `--idle-timeout: "soon" is not a duration (like 90s, 10m, 1h)`},
		{"second value bad", "allow-client", []string{"qBoV", "qBo"}, `--allow-client: client ID "qBo": want 4-character base64 (qBoV), 6 hex digits (a81a15) or a decimal triple (168,26,21)`},
		{"found by Validate", "upstream-bind", []string{"0.0.0.0:4000"}, "--upstream-bind: 0.0.0.0:4000: give an address without a port in wireguard mode, where every session has its own port; use upstream_ports for a range"},
		{"conflict found by Validate", "max-sessions", []string{"11"}, "--max-sessions: 11 sessions need more ports than upstream_ports 40000-40009 has (10)"},
		{"unknown", "colour", []string{"blue"}, "colour: no such flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := twoRelays
			if tt.flag == "idle-timeout" {
				in = "relays:\n  - name: dns\n    mode: forward\n    listen: 127.0.0.1:5353\n    upstream: 192.0.2.53:53\n"
			}
			if tt.flag == "max-sessions" {
				in = strings.Replace(in, "    idle_timeout: 1m\n", "    idle_timeout: 1m\n    upstream_ports: 40000-40009\n", 1)
			}
			f, err := config.Decode([]byte(in), "u.yaml")
			if err != nil {
				t.Fatal(err)
			}
			err = f.SetFlag(tt.flag, tt.values...)
			if err == nil {
				_, err = f.Validate()
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if first, _, _ := strings.Cut(err.Error(), "\n"); first != tt.msg {
				t.Errorf("error\n  %s\nwant\n  %s", err, tt.msg)
			}
		})
	}
}

// A flag that sets a list replaces the file's lines for it: a problem in
// the list is the flag's, not the file's.
func TestSetFlagReplacesTheFilesLines(t *testing.T) {
	f := decodeTwo(t)
	if err := f.SetFlag("allow-client", "qBoV", "a81a15"); err != nil {
		t.Fatal(err)
	}
	_, err := f.Validate()
	if err == nil || err.Error() != "--allow-client: a81a15 is also allow_clients[0]" {
		t.Fatalf("Validate: %v", err)
	}
}

// A flag sets every relay; a problem it makes in several is said once.
func TestSetFlagProblemsSaidOnce(t *testing.T) {
	f, err := config.Decode([]byte(relayAt+"  - name: b\n    listen: 127.0.0.1:2\n    upstream: 192.0.2.1:1\n"), "u.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.SetFlag("upstream-bind", "0.0.0.0:4000"); err != nil {
		t.Fatal(err)
	}
	_, err = f.Validate()
	if err == nil || strings.Count(err.Error(), "\n") != 0 || !strings.HasPrefix(err.Error(), "--upstream-bind: ") {
		t.Fatalf("Validate: %v, want one line about --upstream-bind", err)
	}
}

func TestIdleTimeoutShorterThanKeepaliveWarns(t *testing.T) {
	f, err := config.Decode([]byte(relayAt[:len(relayAt)-14]+"    idle_timeout: 10s\n"), "u.yaml")
	if err != nil {
		t.Fatal(err)
	}
	warnings, err := f.Validate()
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.HasPrefix(warnings[0].Error(), "u.yaml:5: relays[0].idle_timeout: 10s is shorter than the 25s between a WARP client's keepalives") {
		t.Fatalf("warnings %v", warnings)
	}
	if err := f.SetFlag("idle-timeout", "24s"); err != nil {
		t.Fatal(err)
	}
	warnings, _ = f.Validate()
	if len(warnings) != 1 || !strings.HasPrefix(warnings[0].Error(), "--idle-timeout: 24s is shorter") {
		t.Fatalf("warnings %v", warnings)
	}
	if err := f.SetFlag("idle-timeout", "25s"); err != nil {
		t.Fatal(err)
	}
	if warnings, _ = f.Validate(); len(warnings) != 0 {
		t.Fatalf("25s: warnings %v", warnings)
	}
}

func TestFromArgs(t *testing.T) {
	f, err := config.FromArgs("[::]:2408", "engage.cloudflareclient.com:2408")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	r := f.Relays[0]
	if len(f.Relays) != 1 || r.Name != config.DefaultName || r.Mode != config.ModeWireGuard ||
		!slices.Equal(r.Listen, []netip.AddrPort{netip.MustParseAddrPort("[::]:2408")}) ||
		r.Upstream != (config.HostPort{Name: "engage.cloudflareclient.com", Port: 2408}) || r.IdleTimeout != config.DefaultIdleTimeout {
		t.Errorf("relay %+v", f.Relays)
	}
	for _, tt := range []struct{ listen, upstream, msg string }{
		{"nowhere", "192.0.2.1:1", `LISTEN: "nowhere" is not ip:port (write IPv6 as [::]:2408)`},
		{"127.0.0.1:0", "192.0.2.1", `UPSTREAM: "192.0.2.1" is not host:port (write IPv6 as [2001:db8::1]:2408)`},
	} {
		if _, err := config.FromArgs(tt.listen, tt.upstream); err == nil || err.Error() != tt.msg {
			t.Errorf("FromArgs(%q, %q): %v, want %s", tt.listen, tt.upstream, err, tt.msg)
		}
	}
	// A problem Validate finds with the arguments names them too.
	f, _ = config.FromArgs("127.0.0.1:0", "[2001:db8::1]:2408")
	if err := f.SetFlag("upstream-bind", "0.0.0.0"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Validate(); err == nil || !strings.HasPrefix(err.Error(), "--upstream-bind: 0.0.0.0 and the upstream 2001:db8::1 are not the same IP version") {
		t.Errorf("Validate: %v", err)
	}
}

func TestReadForward(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules")
	rules := "# rules\n127.0.0.1,5000,0.0.0.0,0,192.0.2.1,53\n127.0.0.1,5001,0.0.0.0,0,192.0.2.2,53;127.0.0.1,5002,0.0.0.0,0,dns.example,53\n"
	if err := os.WriteFile(path, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := config.ReadForward(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range f.Relays {
		names = append(names, r.Name)
		if r.Mode != config.ModeForward || r.IdleTimeout != 0 || r.UpstreamBind != netip.MustParseAddrPort("0.0.0.0:0") {
			t.Errorf("relay %+v", r)
		}
	}
	if !slices.Equal(names, []string{"line2", "line3", "line3-2"}) {
		t.Errorf("names %v", names)
	}
	if f.Relays[2].Upstream != (config.HostPort{Name: "dns.example", Port: 53}) || f.Origin(2) != path+":3:2" || f.Origin(0) != path+":2" {
		t.Errorf("third rule: %+v, origin %q", f.Relays[2], f.Origin(2))
	}

	// Validate's messages name the rule's line and field.
	bad := "127.0.0.1,5000,0.0.0.0,0,bad_host!,53\n0.0.0.0,5000,0.0.0.0,0,2001:db8::1,53\n127.0.0.2,5000,0.0.0.0,0,192.0.2.1,53; 127.0.0.1,5002,0.0.0.0,0,bad_host!,53\n"
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if f, err = config.ReadForward(path); err != nil {
		t.Fatal(err)
	}
	_, err = f.Validate()
	want := []string{
		path + `:1: dest: "bad_host!" is neither an IP address nor a host name`,
		path + ":2: out: 0.0.0.0 and the upstream 2001:db8::1 are not the same IP version",
		path + ":2: in: 0.0.0.0:5000 overlaps 127.0.0.1:5000 (in of line 1)",
		path + ":3:2: dest: \"bad_host!\" is neither an IP address nor a host name",
		path + ":3:1: in: 127.0.0.2:5000 overlaps 0.0.0.0:5000 (in of line 2)",
	}
	if err == nil {
		t.Fatal("accepted")
	}
	got := strings.Split(err.Error(), "\n")
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
