package config_test

import (
	"errors"
	"io/fs"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// upstream is a documentation address as an upstream.
var upstream = config.HostPortFrom(netip.MustParseAddrPort("192.0.2.1:2408"))

// warpKey is WARP's upstream public key, as the README shows it.
const warpKey = "bmXOC+F1FxEMF9dyiK2H5/1SUtzH0JuVo51h2wPfgyo="

const full = `log:
  level: debug
  format: json
admin: 127.0.0.1:9090
state_file: /var/lib/udpfwd/state.json
relays:
  - name: warp
    mode: wireguard
    listen: ["[::]:2408", 127.0.0.1:2409]
    upstream: engage.cloudflareclient.com:2408
    idle_timeout: 90s
    resolve_interval: 1h30m
    upstream_bind: 0.0.0.0
    upstream_ports: 40000-40999
    read_buffer: 8MiB
    write_buffer: 1048576
    gso: false
    workers: 4
    security:
      upstream_public_key: ` + warpKey + `
      allow_clients: [qBoV, 0a0b0c, "1,2,3", [4, 5, 6], 0x070809]
      allow_cidrs: [198.51.100.0/24, 203.0.113.7, "2001:db8::/32"]
      deny_cidrs: [198.51.100.128/25]
      max_sessions: 500
      max_sessions_per_ip: 4
      new_sessions_per_ip: 0.5
      new_sessions_per_ip_burst: 3
      client_rate: {datagrams_per_second: 20000, bytes_per_second: 10MiB}
  - name: dns_1
    mode: forward
    listen: 127.0.0.1:5353
    upstream: "[2001:db8::53]:53"
    upstream_bind: "[::]:5300"
    reuse_port: true
`

func TestParseFull(t *testing.T) {
	f, err := config.Parse([]byte(full), "udpfwd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if f.Log != (config.Log{Level: "debug", Format: "json"}) || f.Admin != "127.0.0.1:9090" || f.StateFile != "/var/lib/udpfwd/state.json" {
		t.Errorf("process settings = %+v %q %q", f.Log, f.Admin, f.StateFile)
	}
	if len(f.Relays) != 2 {
		t.Fatalf("%d relays, want 2", len(f.Relays))
	}
	w := f.Relays[0]
	ids := []wgproto.ClientID{{0xa8, 0x1a, 0x15}, {0x0a, 0x0b, 0x0c}, {1, 2, 3}, {4, 5, 6}, {7, 8, 9}}
	checks := []struct {
		name string
		ok   bool
	}{
		{"name", w.Name == "warp"},
		{"mode", w.Mode == config.ModeWireGuard},
		{"listen", slices.Equal(w.Listen, []netip.AddrPort{netip.MustParseAddrPort("[::]:2408"), netip.MustParseAddrPort("127.0.0.1:2409")})},
		{"upstream", w.Upstream == config.HostPort{Name: "engage.cloudflareclient.com", Port: 2408}},
		{"idle_timeout", w.IdleTimeout == 90*time.Second},
		{"resolve_interval", w.ResolveInterval == 90*time.Minute},
		{"upstream_bind", w.UpstreamBind == netip.MustParseAddrPort("0.0.0.0:0")},
		{"upstream_ports", w.UpstreamPorts == config.PortRange{First: 40000, Last: 40999}},
		{"read_buffer", w.ReadBuffer == 8<<20},
		{"write_buffer", w.WriteBuffer == 1<<20},
		{"gso", w.NoGSO},
		{"workers", w.Workers == 4},
		{"reuse_port", !w.ReusePort},
		{"upstream_public_key", w.Security.UpstreamPublicKey.String() == warpKey},
		{"allow_clients", slices.Equal(w.Security.AllowClients, ids)},
		{"allow_cidrs", slices.Equal(w.Security.AllowCIDRs, []netip.Prefix{
			netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.7/32"), netip.MustParsePrefix("2001:db8::/32")})},
		{"deny_cidrs", slices.Equal(w.Security.DenyCIDRs, []netip.Prefix{netip.MustParsePrefix("198.51.100.128/25")})},
		{"max_sessions", w.Security.MaxSessions == 500},
		{"max_sessions_per_ip", w.Security.MaxSessionsPerIP == 4},
		{"new_sessions_per_ip", w.Security.NewSessionsPerIP == 0.5},
		{"new_sessions_per_ip_burst", w.Security.NewSessionsPerIPBurst == 3},
		{"client_rate", w.Security.ClientRate == config.ClientRate{DatagramsPerSecond: 20000, BytesPerSecond: 10 << 20}},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("relays[0].%s decoded wrong: %+v", c.name, w)
		}
	}
	d := f.Relays[1]
	if d.Mode != config.ModeForward || len(d.Listen) != 1 || d.Listen[0] != netip.MustParseAddrPort("127.0.0.1:5353") ||
		d.UpstreamBind != netip.MustParseAddrPort("[::]:5300") || d.Upstream.String() != "[2001:db8::53]:53" {
		t.Errorf("forward relay decoded wrong: %+v", d)
	}
	if !d.ReusePort {
		t.Errorf("forward relay's reuse_port decoded wrong: %+v", d)
	}
	if d.IdleTimeout != 0 || d.ResolveInterval != 0 || !d.Security.IsZero() {
		t.Errorf("forward relay got wireguard defaults: %+v", d)
	}
	if d.ReadBuffer != config.DefaultSocketBuffer || d.WriteBuffer != config.DefaultSocketBuffer {
		t.Errorf("forward relay buffers %d/%d, want the default", d.ReadBuffer, d.WriteBuffer)
	}
}

func TestParseDefaults(t *testing.T) {
	f, err := config.Parse([]byte("relays:\n  - name: warp\n    listen: 127.0.0.1:0\n    upstream: 192.0.2.1:2408\n    security:\n"), "min.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := config.Relay{
		Name:            "warp",
		Mode:            config.ModeWireGuard,
		Listen:          []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		Upstream:        upstream,
		IdleTimeout:     config.DefaultIdleTimeout,
		ResolveInterval: config.DefaultResolveInterval,
		ReadBuffer:      config.DefaultSocketBuffer,
		WriteBuffer:     config.DefaultSocketBuffer,
	}
	r := f.Relays[0]
	if r.Name != want.Name || r.Mode != want.Mode || !slices.Equal(r.Listen, want.Listen) || r.Upstream != want.Upstream ||
		r.IdleTimeout != want.IdleTimeout || r.ResolveInterval != want.ResolveInterval || r.ReadBuffer != want.ReadBuffer ||
		r.WriteBuffer != want.WriteBuffer || r.UpstreamBind.IsValid() || !r.UpstreamPorts.IsZero() || !r.Security.IsZero() ||
		r.Workers != 0 || r.ReusePort {
		t.Errorf("relay = %+v, want %+v", r, want)
	}
	if f.Log.Level != "info" || f.Log.Format != "console" || f.Admin != "" || f.StateFile != "" {
		t.Errorf("process settings = %+v %q %q, want info/console and off", f.Log, f.Admin, f.StateFile)
	}
}

// relayAt is a valid config whose relays[0] starts on line 2 and whose
// relays[0].security block starts on line 5, so that a case can append keys
// at a known line.
const relayAt = `relays:
  - name: warp
    listen: ["127.0.0.1:2408"]
    upstream: 192.0.2.1:2408
    security:
`

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		line int
		path string // "" when the message is about the whole file
		msg  string
	}{
		// The YAML itself.
		{"empty file", "# nothing\n", 0, "", "empty config"},
		{"syntax", "relays: [\n", 1, "", "did not find expected node content"},
		{"tab indent", "relays:\n\t- name: warp\n", 2, "", "YAML does not allow tabs"},
		{"second document", relayAt + "---\nlog: {}\n", 6, "", "a second YAML document"},
		{"top is a list", "- relays\n", 1, "", "want keys and values, got a list"},
		{"merge key", "base: &b {level: info}\nlog:\n  <<: *b\n", 1, "base", "unknown key"},
		{"merge key used", "log:\n  <<: {level: info}\n" + relayAt, 2, "log", "merge keys (<<) are not supported"},
		{"list as key", "? [a]\n: 1\n" + relayAt, 1, "", "a key must be a name"},
		{"unknown key with suggestion", relayAt + "    idle-timeout: 1m\n", 6, "relays[0].idle-timeout", `did you mean "idle_timeout"?`},
		{"misspelt key", "admn: 127.0.0.1:9090\n" + relayAt, 1, "admn", `did you mean "admin"?`},
		{"key at the wrong level", "idle_timeout: 1m\n" + relayAt, 1, "idle_timeout", `belongs under relays[]`},
		{"unknown key far from any", relayAt + "      colour: blue\n", 6, "relays[0].security.colour", "known here: upstream_public_key"},
		{"key set twice", "admin: 127.0.0.1:1\n" + relayAt + "admin: 127.0.0.1:2\n", 7, "admin", "set twice (first on line 1)"},
		{"log not a mapping", "log: debug\n" + relayAt, 1, "log", `want keys and values, got "debug"`},
		{"relays not a list", "relays: warp\n", 1, "relays", "want a list of relays"},
		{"relay not a mapping", "relays:\n  - warp\n", 2, "relays[0]", `want a relay (name, listen, upstream, ...), got "warp"`},
		{"list for a single value", "relays:\n  - name: [a, b]\n", 2, "relays[0].name", "want a single value, got a list"},
		{"listen without address", "relays:\n  - name: a\n    listen: \":2408\"\n", 3, "relays[0].listen[0]", `":2408" has no address: write [::]:2408`},
		{"listen without port", "relays:\n  - name: a\n    listen: [127.0.0.1:1, 127.0.0.1]\n", 3, "relays[0].listen[1]", `"127.0.0.1" has no port`},
		{"listen not ip:port", "relays:\n  - name: a\n    listen:\n      - localhost:2408\n", 4, "relays[0].listen[0]", `"localhost:2408" is not ip:port`},
		{"duration without unit", relayAt[:len(relayAt)-14] + "    idle_timeout: 600\n", 5, "relays[0].idle_timeout", `"600" has no unit: write 600s`},
		{"duration garbage", relayAt[:len(relayAt)-14] + "    resolve_interval: 10x\n", 5, "relays[0].resolve_interval", `"10x" is not a duration`},
		{"duration zero", relayAt[:len(relayAt)-14] + "    idle_timeout: 0s\n", 5, "relays[0].idle_timeout", "must be more than 0"},
		{"duration negative", relayAt[:len(relayAt)-14] + "    idle_timeout: -1m\n", 5, "relays[0].idle_timeout", "must be more than 0"},
		{"upstream_bind garbage", relayAt[:len(relayAt)-14] + "    upstream_bind: eth0\n", 5, "relays[0].upstream_bind", `"eth0" is not an IP address`},
		{"upstream_ports garbage", relayAt[:len(relayAt)-14] + "    upstream_ports: 40000-\n", 5, "relays[0].upstream_ports", "is not a port range"},
		{"upstream_ports reversed", relayAt[:len(relayAt)-14] + "    upstream_ports: 2-1\n", 5, "relays[0].upstream_ports", "the first port is above the last"},
		{"upstream_ports zero", relayAt[:len(relayAt)-14] + "    upstream_ports: 0-10\n", 5, "relays[0].upstream_ports", "ports 1..65535"},
		{"buffer in MB", relayAt[:len(relayAt)-14] + "    read_buffer: 4MB\n", 5, "relays[0].read_buffer", "write KiB, MiB or GiB"},
		{"buffer garbage", relayAt[:len(relayAt)-14] + "    write_buffer: lots\n", 5, "relays[0].write_buffer", "is not a size"},
		{"buffer zero", relayAt[:len(relayAt)-14] + "    write_buffer: 0\n", 5, "relays[0].write_buffer", `"0" is too small: want 4KiB..1GiB`},
		{"gso not a boolean", relayAt[:len(relayAt)-14] + "    gso: maybe\n", 5, "relays[0].gso", "want true or false"},
		{"buffer too large", relayAt[:len(relayAt)-14] + "    read_buffer: 4GiB\n", 5, "relays[0].read_buffer", "too large"},
		{"workers zero", relayAt[:len(relayAt)-14] + "    workers: 0\n", 5, "relays[0].workers", `"0": want auto or a number 1..1024`},
		{"workers garbage", relayAt[:len(relayAt)-14] + "    workers: many\n", 5, "relays[0].workers", `"many": want auto or a number 1..1024`},
		{"workers too many", relayAt[:len(relayAt)-14] + "    workers: 1025\n", 5, "relays[0].workers", "want auto or a number 1..1024"},
		{"reuse_port not a boolean", relayAt[:len(relayAt)-14] + "    reuse_port: yes\n", 5, "relays[0].reuse_port", "want true or false"},
		{"public key short", relayAt + "      upstream_public_key: abc=\n", 6, "relays[0].security.upstream_public_key", "want 32 bytes in base64"},
		{"public key zero", relayAt + "      upstream_public_key: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", 6, "relays[0].security.upstream_public_key", "all zero"},
		{"client ID garbage", relayAt + "      allow_clients: [qBoV, nope!]\n", 6, "relays[0].security.allow_clients[1]", "want 4-character base64"},
		{"client ID triple unquoted", relayAt + "      allow_clients: [168, 26, 21]\n", 6, "relays[0].security.allow_clients[0]", `write a decimal triple as one item: ["168,26,21"]`},
		{"client ID zero", relayAt + "      allow_clients:\n        - 000000\n", 7, "relays[0].security.allow_clients[0]", "is zero"},
		{"client ID triple out of range", relayAt + "      allow_clients: [[1, 2, 256]]\n", 6, "relays[0].security.allow_clients[0]", "byte 3 is not 0..255"},
		{"client ID mapping", relayAt + "      allow_clients: [{a: 1}]\n", 6, "relays[0].security.allow_clients[0]", "want a single value, got a mapping"},
		{"CIDR garbage", relayAt + "      deny_cidrs: [10.0.0.0/33]\n", 6, "relays[0].security.deny_cidrs[0]", `"10.0.0.0/33" is not a CIDR`},
		{"integer fraction", relayAt + "      max_sessions: 1.5\n", 6, "relays[0].security.max_sessions", `"1.5" is not a whole number`},
		{"integer negative", relayAt + "      max_sessions_per_ip: -1\n", 6, "relays[0].security.max_sessions_per_ip", "is not a whole number"},
		{"integer huge", relayAt + "      new_sessions_per_ip_burst: 99999999999\n", 6, "relays[0].security.new_sessions_per_ip_burst", "is not a whole number"},
		{"rate garbage", relayAt + "      new_sessions_per_ip: fast\n", 6, "relays[0].security.new_sessions_per_ip", `"fast" is not a rate`},
		{"rate infinite", relayAt + "      client_rate: {datagrams_per_second: inf}\n", 6, "relays[0].security.client_rate.datagrams_per_second", "is not a rate"},
		{"rate negative", relayAt + "      client_rate:\n        datagrams_per_second: -5\n", 7, "relays[0].security.client_rate.datagrams_per_second", "is not a rate"},
		{"byte rate garbage", relayAt + "      client_rate: {bytes_per_second: 10Mbit}\n", 6, "relays[0].security.client_rate.bytes_per_second", "is not a size"},
		{"client_rate unknown key", relayAt + "      client_rate: {bytes: 1}\n", 6, "relays[0].security.client_rate.bytes", "unknown key"},

		// Whole-file validation.
		{"log level", "log: {level: loud}\n" + relayAt, 1, "log.level", `"loud": want debug, info, warn or error`},
		{"log format", "log:\n  format: xml\n" + relayAt, 2, "log.format", `"xml": want console or json`},
		{"admin without port", "admin: 127.0.0.1\n" + relayAt, 1, "admin", "is not host:port"},
		{"admin bad port", "admin: 127.0.0.1:http\n" + relayAt, 1, "admin", `port "http" is not 1..65535`},
		{"admin bad host", "admin: bad_host!:9090\n" + relayAt, 1, "admin", "neither an IP address nor a host name"},
		{"state file relative", "state_file: state.json\n" + relayAt, 1, "state_file", "want an absolute file path"},
		{"state file directory", "state_file: /var/lib/udpfwd/\n" + relayAt, 1, "state_file", "want an absolute file path"},
		{"no relays", "log: {level: info}\nrelays: []\n", 2, "relays", "no relays"},
		{"relays key missing", "admin: 127.0.0.1:9090\n", 1, "relays", "no relays"},
		{"name missing", "relays:\n  - listen: 127.0.0.1:1\n    upstream: 192.0.2.1:1\n", 2, "relays[0]", "name is missing"},
		{"name upper case", "relays:\n  - name: Warp\n    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:1\n", 2, "relays[0].name", `"Warp": use 1..64 of a-z`},
		{"name too long", "relays:\n  - name: " + strings.Repeat("a", 65) + "\n    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:1\n", 2, "relays[0].name", "use 1..64"},
		{"name duplicate", relayAt + "  - name: warp\n    listen: 127.0.0.1:2\n    upstream: 192.0.2.1:1\n", 6, "relays[1].name", `"warp" is also the name of relays[0]`},
		{"mode unknown", relayAt[:len(relayAt)-14] + "    mode: tcp\n", 5, "relays[0].mode", `"tcp": want wireguard or forward`},
		{"listen missing", "relays:\n  - name: a\n    upstream: 192.0.2.1:1\n", 2, "relays[0]", "listen is missing"},
		{"upstream missing", "relays:\n  - name: a\n    listen: 127.0.0.1:1\n", 2, "relays[0]", "upstream is missing"},
		{"upstream IPv6 without brackets", "relays:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: 2001:db8::1:2408\n", 4, "relays[0].upstream", "write IPv6 as [2001:db8::1]:2408"},
		{"upstream port 0", "relays:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:0\n", 4, "relays[0].upstream", `port "0" is not 1..65535`},
		{"upstream port too big", "relays:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:65536\n", 4, "relays[0].upstream", `port "65536" is not 1..65535`},
		{"upstream bad host", "relays:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: -bad-.example:1\n", 4, "relays[0].upstream", "neither an IP address nor a host name"},
		{"upstream no host", "relays:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: \":2408\"\n", 4, "relays[0].upstream", "the host is missing"},
		{"bind IP version", relayAt[:len(relayAt)-14] + "    upstream_bind: \"::\"\n", 5, "relays[0].upstream_bind", ":: and the upstream 192.0.2.1 are not the same IP version"},
		{"bind port in wireguard mode", relayAt[:len(relayAt)-14] + "    upstream_bind: 0.0.0.0:4000\n", 5, "relays[0].upstream_bind", "without a port in wireguard mode"},
		{"buffer too small", relayAt[:len(relayAt)-14] + "    read_buffer: 4\n", 5, "relays[0].read_buffer", `"4" is too small (4 bytes): want 4KiB..1GiB; write 4MiB`},
		{"buffer too big", relayAt[:len(relayAt)-14] + "    write_buffer: 2000000000\n", 5, "relays[0].write_buffer", "want 4KiB..1GiB"},
		{"forward two listens", "relays:\n  - name: a\n    mode: forward\n    listen: [127.0.0.1:1, 127.0.0.1:2]\n    upstream: 192.0.2.1:1\n", 4, "relays[0].listen", "exactly one address, got 2"},
		{"forward idle_timeout", "relays:\n  - name: a\n    mode: forward\n    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:1\n    idle_timeout: 1m\n", 6, "relays[0].idle_timeout", "not used in forward mode"},
		{"forward resolve_interval", "relays:\n  - name: a\n    mode: forward\n    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:1\n    resolve_interval: 1m\n", 6, "relays[0].resolve_interval", "not used in forward mode"},
		{"forward upstream_ports", "relays:\n  - name: a\n    mode: forward\n    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:1\n    upstream_ports: 5000\n", 6, "relays[0].upstream_ports", "give its port in upstream_bind"},
		{"workers with reuse_port", relayAt[:len(relayAt)-14] + "    reuse_port: true\n    workers: 4\n", 6, "relays[0].workers", "4 with reuse_port: a port shared with other processes cannot be steered by client ID"},
		{"forward workers", "relays:\n  - name: a\n    mode: forward\n    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:1\n    workers: 2\n", 6, "relays[0].workers", "it runs one worker"},
		{"forward security", "relays:\n  - name: a\n    mode: forward\n    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:1\n    security: {max_sessions: 3}\n", 6, "relays[0].security", "not used in forward mode"},
		{"listen duplicate in a relay", "relays:\n  - name: a\n    listen: [127.0.0.1:1, 127.0.0.1:1]\n    upstream: 192.0.2.1:1\n", 3, "relays[0].listen[1]", "127.0.0.1:1 overlaps 127.0.0.1:1 (relays[0].listen[0])"},
		{"listen duplicate across relays", relayAt + "  - name: b\n    listen:\n      - 127.0.0.1:2408\n    upstream: 192.0.2.1:1\n", 8, "relays[1].listen[0]", "overlaps 127.0.0.1:2408 (relays[0].listen[0])"},
		{"listen under a wildcard", relayAt + "  - name: b\n    listen: 0.0.0.0:2408\n    upstream: 192.0.2.1:1\n", 7, "relays[1].listen[0]", "0.0.0.0:2408 overlaps 127.0.0.1:2408"},
		{"listen v4 under dual-stack", "relays:\n  - name: a\n    listen: [\"[::]:9\", 0.0.0.0:9]\n    upstream: 192.0.2.1:1\n", 3, "relays[0].listen[1]", "0.0.0.0:9 overlaps [::]:9"},
		{"upstream ports hold a listen port", relayAt[:len(relayAt)-14] + "    upstream_ports: 2400-2500\n", 5, "relays[0].upstream_ports", "2400-2500 contains the port of 127.0.0.1:2408 (relays[0].listen[0])"},
		{"forward bind on a listen port", relayAt + "  - name: b\n    mode: forward\n    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:1\n    upstream_bind: 0.0.0.0:2408\n", 10, "relays[1].upstream_bind", "0.0.0.0:2408 overlaps 127.0.0.1:2408"},
		{"client ID twice", relayAt + "      allow_clients: [qBoV, a81a15]\n", 6, "relays[0].security.allow_clients[1]", "a81a15 is also allow_clients[0]"},
		{"CIDR host bits", relayAt + "      allow_cidrs: [10.1.2.3/8]\n", 6, "relays[0].security.allow_cidrs[0]", "has host bits set; write 10.0.0.0/8"},
		{"burst without rate", relayAt + "      new_sessions_per_ip_burst: 5\n", 6, "relays[0].security.new_sessions_per_ip_burst", "set without new_sessions_per_ip"},
		{"more sessions than ports", relayAt[:len(relayAt)-14] + "    upstream_ports: 40000-40009\n    security:\n      max_sessions: 11\n", 7, "relays[0].security.max_sessions", "11 sessions need more ports than upstream_ports 40000-40009 has (10)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := config.Parse([]byte(tt.in), "udpfwd.yaml")
			if err == nil {
				t.Fatalf("no error; parsed %+v", f)
			}
			want := "udpfwd.yaml: "
			if tt.line > 0 {
				want = "udpfwd.yaml:" + strconv.Itoa(tt.line) + ": "
			}
			if tt.path != "" {
				want += tt.path + ": "
			}
			first, _, _ := strings.Cut(err.Error(), "\n")
			if !strings.HasPrefix(first, want) || !strings.Contains(first, tt.msg) {
				t.Fatalf("error:\n  %s\nwant it to start with %q and contain %q", err, want, tt.msg)
			}
			var ce *config.Error
			if !errors.As(err, &ce) || ce.File != "udpfwd.yaml" || ce.Line != tt.line || ce.Path != tt.path {
				t.Fatalf("errors.As: %#v, want File udpfwd.yaml, Line %d, Path %q", ce, tt.line, tt.path)
			}
		})
	}
}

func TestParseReportsEveryProblemInOrder(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		want     []string
	}{
		{"values", "log: {level: loud}\n" + // 1
			"admin: nope\n" + // 2
			"relays:\n" + // 3
			"  - name: a\n" + // 4
			"    listen: 127.0.0.1\n" + // 5
			"    upstream: 192.0.2.1:0\n", // 6
			[]string{"u.yaml:1: log.level", "u.yaml:2: admin", "u.yaml:5: relays[0].listen[0]", "u.yaml:6: relays[0].upstream"}},
		{"the whole", "relays:\n" + // 1
			"  - name: A\n" + // 2
			"    listen: 127.0.0.1:1\n" + // 3
			"  - name: b\n" + // 4
			"    listen: 127.0.0.1:1\n" + // 5
			"    upstream: 192.0.2.1:1\n", // 6
			[]string{"u.yaml:2: relays[0].name", "u.yaml:2: relays[0]", "u.yaml:5: relays[1].listen[0]"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tt.in), "u.yaml")
			if err == nil {
				t.Fatal("no error")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("%d problems, want %d:\n%s", len(lines), len(tt.want), err)
			}
			for i := range tt.want {
				if !strings.HasPrefix(lines[i], tt.want[i]+": ") {
					t.Errorf("problem %d = %q, want it to start with %q", i, lines[i], tt.want[i])
				}
			}
		})
	}
}

func TestParseCapsTheNumberOfProblems(t *testing.T) {
	var b strings.Builder
	b.WriteString("relays:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:1\n    security:\n      allow_clients:\n")
	for range 30 {
		b.WriteString("        - bad!\n")
	}
	_, err := config.Parse([]byte(b.String()), "u.yaml")
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 21 || lines[20] != "and 10 more problems" {
		t.Fatalf("got %d lines, last %q; want 20 problems and a count of 10 more", len(lines), lines[len(lines)-1])
	}
}

func TestParseAliases(t *testing.T) {
	in := "relays:\n" +
		"  - name: a\n    listen: 127.0.0.1:1\n    upstream: &up 192.0.2.1:2408\n    security: &sec {max_sessions: 7}\n" +
		"  - name: b\n    listen: 127.0.0.1:2\n    upstream: *up\n    security: *sec\n"
	f, err := config.Parse([]byte(in), "u.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if f.Relays[1].Upstream != upstream || f.Relays[1].Security.MaxSessions != 7 {
		t.Errorf("aliases not followed: %+v", f.Relays[1])
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "udpfwd.yaml")
	if err := os.WriteFile(path, []byte("relays:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:70000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":4: relays[0].upstream: ") {
		t.Errorf("Load error %v, want it to name %s:4", err, path)
	}
	_, err = config.Load(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want fs.ErrNotExist wrapped", err)
	}
	// A config path is data: a named pipe is refused at once (opened
	// without blocking), and so is a device that would never end.
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fifo, "/dev/zero"} {
		if _, err := config.Load(p); err == nil || !strings.HasSuffix(err.Error(), "not a regular file") {
			t.Errorf("Load(%s): %v, want it refused as not a regular file", p, err)
		}
	}
}

func TestValidateBuiltInCode(t *testing.T) {
	f := &config.File{Relays: []config.Relay{{
		Name:     "a",
		Listen:   []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")},
		Upstream: upstream,
	}}}
	if _, err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	r := f.Relays[0]
	if r.Mode != config.ModeWireGuard || r.IdleTimeout != config.DefaultIdleTimeout || r.ReadBuffer != config.DefaultSocketBuffer || f.Log.Level != "info" {
		t.Errorf("defaults not filled in: %+v %+v", f.Log, r)
	}
	if _, err := f.Validate(); err != nil {
		t.Errorf("second Validate: %v", err)
	}

	tests := []struct {
		name   string
		change func(*config.Relay)
		msg    string
	}{
		{"negative idle timeout", func(r *config.Relay) { r.IdleTimeout = -time.Second }, "relays[0].idle_timeout: -1s: must be positive"},
		{"negative resolve interval", func(r *config.Relay) { r.ResolveInterval = -time.Second }, "relays[0].resolve_interval: -1s: must be positive"},
		{"zero client ID", func(r *config.Relay) { r.Security.AllowClients = []wgproto.ClientID{{}} }, "relays[0].security.allow_clients[0]: the zero client ID"},
		{"invalid prefix", func(r *config.Relay) { r.Security.DenyCIDRs = []netip.Prefix{{}} }, "relays[0].security.deny_cidrs[0]: not a CIDR"},
		{"invalid listen", func(r *config.Relay) { r.Listen = []netip.AddrPort{{}} }, "relays[0].listen[0]: not an ip:port"},
		{"too many listens", func(r *config.Relay) {
			r.Listen = nil
			for i := range config.MaxListen + 1 {
				r.Listen = append(r.Listen, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1000+i)))
			}
		}, "relays[0].listen: 257 addresses: at most 256"},
		{"port range reversed", func(r *config.Relay) { r.UpstreamPorts = config.PortRange{First: 9, Last: 8} }, "relays[0].upstream_ports: 9-8: want first..last"},
		{"negative cap", func(r *config.Relay) { r.Security.MaxSessions = -1 }, "relays[0].security.max_sessions: -1: must be 0 or more"},
		{"negative byte rate", func(r *config.Relay) { r.Security.ClientRate.BytesPerSecond = -1 }, "relays[0].security.client_rate.bytes_per_second: -1: must be 0 or more"},
		// Rates must be finite: a NaN rate compares false with everything,
		// so a limiter would let everything through.
		{"negative sessions per IP", func(r *config.Relay) { r.Security.MaxSessionsPerIP = -1 }, "relays[0].security.max_sessions_per_ip: -1: must be 0 or more"},
		{"negative new sessions per IP", func(r *config.Relay) { r.Security.NewSessionsPerIP = -1 }, "relays[0].security.new_sessions_per_ip: -1: must be 0 or more"},
		{"NaN new sessions per IP", func(r *config.Relay) { r.Security.NewSessionsPerIP = math.NaN() }, "relays[0].security.new_sessions_per_ip: NaN: must be 0 or more"},
		{"infinite new sessions per IP", func(r *config.Relay) { r.Security.NewSessionsPerIP = math.Inf(1) }, "relays[0].security.new_sessions_per_ip: +Inf: must be finite"},
		{"negative new-session burst", func(r *config.Relay) { r.Security.NewSessionsPerIPBurst = -1 }, "relays[0].security.new_sessions_per_ip_burst: -1: must be 0 or more"},
		{"NaN client rate", func(r *config.Relay) { r.Security.ClientRate.DatagramsPerSecond = math.NaN() }, "relays[0].security.client_rate.datagrams_per_second: NaN: must be 0 or more"},
		{"infinite client rate", func(r *config.Relay) { r.Security.ClientRate.DatagramsPerSecond = math.Inf(1) }, "relays[0].security.client_rate.datagrams_per_second: +Inf: must be finite"},
		{"buffer too small", func(r *config.Relay) { r.ReadBuffer = 4 }, `relays[0].read_buffer: "4" is too small (4 bytes): want 4KiB..1GiB`},
		{"upstream port 0", func(r *config.Relay) { r.Upstream.Port = 0 }, "relays[0].upstream: 192.0.2.1:0: port 0 is not 1..65535"},
		{"upstream bad name", func(r *config.Relay) { r.Upstream = config.HostPort{Name: "bad name", Port: 1} }, `relays[0].upstream: "bad name" is neither an IP address nor a host name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &config.File{Relays: []config.Relay{{
				Name:     "a",
				Listen:   []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")},
				Upstream: upstream,
			}}}
			tt.change(&f.Relays[0])
			_, err := f.Validate()
			// Built in code: no file name and no line.
			if err == nil || !strings.HasPrefix(err.Error(), tt.msg) {
				t.Fatalf("Validate: %v, want it to start with %q", err, tt.msg)
			}
		})
	}
}

func TestEffectiveRoundTrip(t *testing.T) {
	for _, in := range []string{full, relayAt} {
		f, err := config.Parse([]byte(in), "in.yaml")
		if err != nil {
			t.Fatal(err)
		}
		out, err := f.Effective()
		if err != nil {
			t.Fatal(err)
		}
		g, err := config.Parse(out, "effective.yaml")
		if err != nil {
			t.Fatalf("Effective output does not parse: %v\n%s", err, out)
		}
		if f.Log != g.Log || f.Admin != g.Admin || f.StateFile != g.StateFile || len(f.Relays) != len(g.Relays) {
			t.Fatalf("round trip changed the process settings:\n%+v\n%+v", f, g)
		}
		for i := range f.Relays {
			if !f.Relays[i].Equal(&g.Relays[i]) {
				t.Errorf("round trip changed relays[%d]:\n%+v\n%+v", i, f.Relays[i], g.Relays[i])
			}
		}
		again, err := g.Effective()
		if err != nil || string(again) != string(out) {
			t.Errorf("Effective of the parsed output differs (%v):\n%s\n---\n%s", err, out, again)
		}
	}
}

func TestEffectiveShowsDefaultsAndModeKeys(t *testing.T) {
	f, err := config.Parse([]byte(full), "in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.Effective()
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	// The forward relay is last: none of the wireguard-only keys may follow
	// its name.
	fwd := s[strings.Index(s, "name: dns_1"):]
	for _, key := range []string{"idle_timeout", "resolve_interval", "upstream_ports", "security"} {
		if strings.Contains(fwd, key+":") {
			t.Errorf("forward relay shows %s:\n%s", key, fwd)
		}
	}
	for _, want := range []string{"idle_timeout: 1m30s", "resolve_interval: 1h30m", "read_buffer: 8MiB", "write_buffer: 1MiB", "gso: false", "gso: true",
		"upstream_ports: 40000-40999", "bytes_per_second: 10MiB", "new_sessions_per_ip: 0.5", `- "010203"`, "upstream_bind: '[::]:5300'"} {
		if !strings.Contains(s, want) {
			t.Errorf("effective config lacks %q:\n%s", want, s)
		}
	}
	g, err := config.Parse([]byte(relayAt), "in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, _ = g.Effective()
	for _, want := range []string{"level: info", "format: console", `admin: ""`, "idle_timeout: 10m", "resolve_interval: 5m", "read_buffer: 4MiB", "max_sessions: 0", "allow_clients: []"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("effective config lacks default %q:\n%s", want, out)
		}
	}
}

func TestEffectiveRefusesAnInvalidConfig(t *testing.T) {
	f := &config.File{}
	if _, err := f.Effective(); err == nil || !strings.Contains(err.Error(), "no relays") {
		t.Errorf("Effective of an empty File: %v, want the validation error", err)
	}
}

func TestValidateAfterChangesInCode(t *testing.T) {
	f, err := config.Parse([]byte(relayAt), "u.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// A relay added from the command line was never in the file: no line.
	f.Relays = append(f.Relays, config.Relay{Name: "cli", Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:2408")}, Upstream: config.HostPortFrom(netip.MustParseAddrPort("192.0.2.1:1"))})
	_, err = f.Validate()
	if err == nil || !strings.HasPrefix(err.Error(), "u.yaml: relays[1].listen[0]: 127.0.0.1:2408 overlaps") {
		t.Fatalf("Validate: %v, want the conflict reported without a line", err)
	}
	// A value of the file changed in code is reported where the file set it.
	f.Relays = f.Relays[:1]
	f.Relays[0].Upstream.Port = 0
	if _, err := f.Validate(); err == nil || !strings.HasPrefix(err.Error(), "u.yaml:4: relays[0].upstream: ") {
		t.Fatalf("Validate: %v, want it at line 4", err)
	}
}
