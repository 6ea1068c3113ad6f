package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// kv is a key of the config file and its value: the key's path below the
// relay (security.max_sessions), or from the top with a leading "/"
// (/log.level).
type kv struct{ key, value string }

// configYAML writes a file with one relay as -r writes it, plus keys.
func configYAML(keys []kv) string {
	var top, relay []kv
	for _, k := range keys {
		if p, ok := strings.CutPrefix(k.key, "/"); ok {
			top = append(top, kv{p, k.value})
		} else {
			relay = append(relay, k)
		}
	}
	var b strings.Builder
	nested(&b, top, "")
	b.WriteString("relays:\n  - name: default\n    listen: 127.0.0.1:0\n    upstream: 192.0.2.1:2408\n")
	nested(&b, relay, "    ")
	return b.String()
}

// nested writes dotted keys as nested YAML mappings; keys that share a
// mapping come one after the other. Values are quoted, so that YAML takes
// them as the text they are.
func nested(b *strings.Builder, keys []kv, indent string) {
	var open []string
	for _, k := range keys {
		parts := strings.Split(k.key, ".")
		common := 0
		for common < len(open) && common < len(parts)-1 && open[common] == parts[common] {
			common++
		}
		open = open[:common]
		for _, p := range parts[common : len(parts)-1] {
			fmt.Fprintf(b, "%s%s%s:\n", indent, strings.Repeat("  ", len(open)), p)
			open = append(open, p)
		}
		fmt.Fprintf(b, "%s%s%s: %q\n", indent, strings.Repeat("  ", len(open)), parts[len(parts)-1], k.value)
	}
}

// outcome is what a command line made of a value: its config, or the
// first line of its problem, and its first warning, each without the
// place the value was set.
type outcome struct {
	cfg     *config.File
	problem string
	warning string
}

var (
	// flagPlace is where a flag's message says it was set: "--flag: ".
	flagPlace = regexp.MustCompile(`^--[a-z-]+: `)
	// keyPlace is where a key's message says it was set: "file:line: path: ".
	keyPlace = regexp.MustCompile(`^[^:]+:\d+: [a-z_.]+(\[\d+\])?(\.[a-z_.]+)*(\[\d+\])?: `)
)

func run1(t *testing.T, args []string, place *regexp.Regexp) outcome {
	t.Helper()
	o, err := parse(args, io.Discard)
	if err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	f, warnings, err := o.config()
	var out outcome
	strip := func(s string) string {
		s, _, _ = strings.Cut(s, "\n")
		if !place.MatchString(s) {
			t.Errorf("%q: the message does not start with where the value was set: %s", args, s)
		}
		return place.ReplaceAllString(s, "")
	}
	if err != nil {
		out.problem = strip(err.Error())
	} else {
		out.cfg = f
	}
	if len(warnings) > 0 {
		out.warning = strip(warnings[0].Error())
	}
	return out
}

// TestFlagAndKeyAgree runs each value through its flag and through the
// config file's key: both take it, to the same configuration, or both
// refuse it, with the same message but for the place (--flag: ..., or
// file:line: key: ...); warnings alike.
func TestFlagAndKeyAgree(t *testing.T) {
	sizes := func(v string) []kv { return []kv{{"read_buffer", v}, {"write_buffer", v}} }
	idle := func(v string) []kv { return []kv{{"idle_timeout", v}} }
	sec := func(key, v string) []kv { return []kv{{"security." + key, v}} }
	rate := func(pps, bps string) []kv {
		keys := []kv{{"security.client_rate.datagrams_per_second", pps}}
		if bps != "" {
			keys = append(keys, kv{"security.client_rate.bytes_per_second", bps})
		}
		return keys
	}
	zeroKey := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	tests := []struct {
		name      string
		flag      string // --flag=value
		keys      []kv   // the same in the file
		ok        bool
		warning   string // a part of the warning, if one is due
		problem   string // a part of the problem, if refused
		sameValue bool   // check that both give the same configuration
	}{
		{"buffer 4MiB", "--socket-buffer=4MiB", sizes("4MiB"), true, "", "", true},
		{"buffer 4", "--socket-buffer=4", sizes("4"), false, "", `"4" is too small (4 bytes): want 4KiB..1GiB; write 4MiB`, false},
		{"buffer 4096", "--socket-buffer=4096", sizes("4096"), true, "", "", true},
		{"buffer 1GiB", "--socket-buffer=1GiB", sizes("1GiB"), true, "", "", true},
		{"buffer 1GiB+1", "--socket-buffer=1073741825", sizes("1073741825"), false, "", "is too large: want 4KiB..1GiB", false},
		{"buffer 0", "--socket-buffer=0", sizes("0"), false, "", `"0" is too small`, false},
		{"buffer 4MB", "--socket-buffer=4MB", sizes("4MB"), false, "", "write KiB, MiB or GiB", false},
		{"idle 10s", "--idle-timeout=10s", idle("10s"), true, "10s is shorter than the 25s between a WARP client's keepalives", "", true},
		{"idle 90s", "--idle-timeout=90s", idle("90s"), true, "", "", true},
		{"idle -1s", "--idle-timeout=-1s", idle("-1s"), false, "", `"-1s": must be more than 0`, false},
		{"idle 0s", "--idle-timeout=0s", idle("0s"), false, "", `"0s": must be more than 0`, false},
		{"idle without unit", "--idle-timeout=600", idle("600"), false, "", `"600" has no unit`, false},
		{"bad duration", "--idle-timeout=soon", idle("soon"), false, "", `"soon" is not a duration`, false},
		{"bad CIDR", "--allow-cidr=10.0.0.0/33", sec("allow_cidrs", "10.0.0.0/33"), false, "", "is not a CIDR", false},
		{"CIDR with host bits", "--deny-cidr=10.1.2.3/8", sec("deny_cidrs", "10.1.2.3/8"), false, "", "has host bits set; write 10.0.0.0/8", false},
		{"CIDR", "--deny-cidr=2001:db8::/32", sec("deny_cidrs", "2001:db8::/32"), true, "", "", true},
		{"address as a CIDR", "--allow-cidr=203.0.113.7", sec("allow_cidrs", "203.0.113.7"), true, "", "", true},
		{"bad client ID", "--allow-client=zzz", sec("allow_clients", "zzz"), false, "", "want 4-character base64", false},
		{"zero client ID", "--allow-client=000000", sec("allow_clients", "000000"), false, "", "is zero", false},
		{"client ID triple", "--allow-client=168,26,21", sec("allow_clients", "168,26,21"), true, "", "", true},
		{"bad key", "--upstream-public-key=abc=", sec("upstream_public_key", "abc="), false, "", "want 32 bytes in base64", false},
		{"zero key", "--upstream-public-key=" + zeroKey, sec("upstream_public_key", zeroKey), false, "", "is all zero", false},
		{"WARP's key", "--upstream-public-key=" + wgproto.WARPPublicKey, sec("upstream_public_key", wgproto.WARPPublicKey), true, "", "", true},
		{"no key", "--upstream-public-key=", sec("upstream_public_key", ""), true, "", "", true},
		{"rate NaN", "--new-sessions-per-ip=NaN", sec("new_sessions_per_ip", "NaN"), false, "", `"NaN" is not a rate`, false},
		{"rate negative", "--new-sessions-per-ip=-1", sec("new_sessions_per_ip", "-1"), false, "", `"-1" is not a rate`, false},
		{"rate infinite", "--new-sessions-per-ip=Inf", sec("new_sessions_per_ip", "Inf"), false, "", `"Inf" is not a rate`, false},
		{"rate", "--new-sessions-per-ip=0.5", sec("new_sessions_per_ip", "0.5"), true, "", "", true},
		{"burst without a rate", "--new-sessions-per-ip-burst=5", sec("new_sessions_per_ip_burst", "5"), false, "", "set without new_sessions_per_ip", false},
		{"client rate NaN", "--client-rate=NaN", rate("NaN", ""), false, "", `"NaN" is not a rate`, false},
		{"client rate negative", "--client-rate=-5", rate("-5", ""), false, "", `"-5" is not a rate`, false},
		{"client byte rate bad", "--client-rate=100,lots", rate("100", "lots"), false, "", `"lots" is not a size`, false},
		{"client rate", "--client-rate=5000,50MiB", rate("5000", "50MiB"), true, "", "", true},
		{"cap negative", "--max-sessions=-1", sec("max_sessions", "-1"), false, "", `"-1" is not a whole number`, false},
		{"cap fraction", "--max-sessions=1.5", sec("max_sessions", "1.5"), false, "", `"1.5" is not a whole number`, false},
		{"cap 0", "--max-sessions=0", sec("max_sessions", "0"), true, "", "", true},
		{"cap per IP negative", "--max-sessions-per-ip=-1", sec("max_sessions_per_ip", "-1"), false, "", "is not a whole number", false},
		{"bind not an IP", "--upstream-bind=eth0", []kv{{"upstream_bind", "eth0"}}, false, "", `"eth0" is not an IP address`, false},
		{"bind with a port", "--upstream-bind=0.0.0.0:4000", []kv{{"upstream_bind", "0.0.0.0:4000"}}, false, "", "without a port in wireguard mode", false},
		{"bind of the other IP version", "--upstream-bind=::", []kv{{"upstream_bind", "::"}}, false, "", "are not the same IP version", false},
		{"bind", "--upstream-bind=0.0.0.0", []kv{{"upstream_bind", "0.0.0.0"}}, true, "", "", true},
		{"workers 4", "--workers=4", []kv{{"workers", "4"}}, true, "", "", true},
		{"workers auto", "--workers=auto", []kv{{"workers", "auto"}}, true, "", "", true},
		{"workers 0", "--workers=0", []kv{{"workers", "0"}}, false, "", `"0": want auto or a number 1..1024`, false},
		{"workers too many", "--workers=1025", []kv{{"workers", "1025"}}, false, "", "want auto or a number 1..1024", false},
		{"reuse port", "--reuse-port=true", []kv{{"reuse_port", "true"}}, true, "", "", true},
		{"reuse port not a boolean", "--reuse-port=maybe", []kv{{"reuse_port", "maybe"}}, false, "", `"maybe": want true or false`, false},
		{"failover after 3", "--failover-after=3", []kv{{"failover_after", "3"}}, true, "", "", true},
		{"failover after 0", "--failover-after=0", []kv{{"failover_after", "0"}}, false, "", `"0" is not a whole number 1..100`, false},
		{"failover after a word", "--failover-after=twice", []kv{{"failover_after", "twice"}}, false, "", `"twice" is not a whole number 1..100`, false},
		{"zero ID track", "--zero-id=track", []kv{{"zero_id", "track"}}, true, "", "", true},
		{"zero ID drop", "--zero-id=drop", []kv{{"zero_id", "drop"}}, true, "", "", true},
		{"zero ID bad", "--zero-id=keep", []kv{{"zero_id", "keep"}}, false, "", `"keep": want drop or track`, false},
		{"stamp without track", "--stamp-client-id=qBoV", []kv{{"stamp_client_id", "qBoV"}}, false, "", "set without zero_id: track", false},
		{"stamp bad", "--stamp-client-id=zzz", []kv{{"stamp_client_id", "zzz"}}, false, "", "want 4-character base64", false},
		{"stamp zero", "--stamp-client-id=0,0,0", []kv{{"stamp_client_id", "0,0,0"}}, false, "", "is zero", false},
		{"stamp off", "--stamp-client-id=", []kv{{"stamp_client_id", ""}}, true, "", "", true},
		{"message types any", "--message-types=any", []kv{{"message_types", "any"}}, true, "", "", true},
		{"message types bad", "--message-types=all", []kv{{"message_types", "all"}}, false, "", `"all": want strict or any`, false},
		{"GSO not a boolean", "--no-gso=maybe", []kv{{"gso", "maybe"}}, false, "", `"maybe": want true or false`, false},
		{"GSO off", "--no-gso=true", []kv{{"gso", "false"}}, true, "", "", true},
		{"log level", "--log-level=loud", []kv{{"/log.level", "loud"}}, false, "", `"loud": want debug, info, warn or error`, false},
		{"log format", "--log-format=xml", []kv{{"/log.format", "xml"}}, false, "", `"xml": want console or json`, false},
		{"admin without port", "--admin=nope", []kv{{"/admin", "nope"}}, false, "", "is not host:port", false},
		{"admin by name", "--admin=localhost:9090", []kv{{"/admin", "localhost:9090"}}, true, "", "", true},
		{"relative state file", "--state-file=state.json", []kv{{"/state_file", "state.json"}}, false, "", "want an absolute file path", false},
		{"state file", "--state-file=/var/lib/udpfwd/state.json", []kv{{"/state_file", "/var/lib/udpfwd/state.json"}}, true, "", "", true},
		{"admin token file", "--admin-token-file=/etc/udpfwd/admin-token", []kv{{"/admin_token_file", "/etc/udpfwd/admin-token"}}, true, "set, but the admin listener is off", "", true},
		{"admin token file a directory", "--admin-token-file=/etc/udpfwd/", []kv{{"/admin_token_file", "/etc/udpfwd/"}}, false, "", "want a file, not a directory", false},
		{"admin allowed host", "--admin-allow-host=relay1.example.net", []kv{{"/admin_allow_hosts", "relay1.example.net"}}, true, "set, but the admin listener is off", "", true},
		{"admin allows any host", "--admin-allow-host=*", []kv{{"/admin_allow_hosts", "*"}}, true, "set, but the admin listener is off", "", true},
		{"cluster reply bad", "--cluster-reply=both", []kv{{"/cluster.reply", "both"}}, false, "", `"both": want owner or ingress`, false},
		{"cluster bind without a name", "--cluster-bind=127.0.0.1:7000", []kv{{"/cluster.bind", "127.0.0.1:7000"}}, false, "", "cluster settings without a cluster name", false},
		{"cluster bind IPv6", "--cluster-bind=[::1]:7000", []kv{{"/cluster.bind", "[::1]:7000"}}, false, "", "want an IPv4 address", false},
		{"cluster bind last port", "--cluster-bind=127.0.0.1:65535", []kv{{"/cluster.bind", "127.0.0.1:65535"}}, false, "", "port + 1 is the health port", false},
		{"cluster name bad", "--cluster=Edge", []kv{{"/cluster.name", "Edge"}}, false, "", `"Edge": want [a-z0-9_-]+`, false},
		{"cluster without a bind", "--cluster=edge", []kv{{"/cluster.name", "edge"}}, false, "", "a cluster needs this node's address", false},
		{"admin allowed host with a port", "--admin-allow-host=relay1.example.net:9090", []kv{{"/admin_allow_hosts", "relay1.example.net:9090"}}, false, "", "without a port", false},
	}
	dir := t.TempDir()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("%d.yaml", i))
			if err := os.WriteFile(path, []byte(configYAML(tt.keys)), 0o600); err != nil {
				t.Fatal(err)
			}
			byFlag := run1(t, []string{"-r", "127.0.0.1:0", "192.0.2.1:2408", tt.flag}, flagPlace)
			byKey := run1(t, []string{"-c", path}, keyPlace)
			if (byFlag.cfg != nil) != tt.ok || (byKey.cfg != nil) != tt.ok {
				t.Fatalf("accepted by the flag %v, by the key %v; want %v\nflag: %s\nkey:  %s", byFlag.cfg != nil, byKey.cfg != nil, tt.ok, byFlag.problem, byKey.problem)
			}
			if byFlag.problem != byKey.problem || !strings.Contains(byFlag.problem, tt.problem) {
				t.Errorf("problems differ or lack %q:\nflag: %s\nkey:  %s", tt.problem, byFlag.problem, byKey.problem)
			}
			if byFlag.warning != byKey.warning || !strings.Contains(byFlag.warning, tt.warning) || (tt.warning == "") != (byFlag.warning == "") {
				t.Errorf("warnings differ or lack %q:\nflag: %s\nkey:  %s", tt.warning, byFlag.warning, byKey.warning)
			}
			if tt.sameValue {
				f, k := byFlag.cfg, byKey.cfg
				if !f.Relays[0].Equal(&k.Relays[0]) || f.Log != k.Log || f.Admin != k.Admin || f.StateFile != k.StateFile ||
					f.AdminTokenFile != k.AdminTokenFile || !slices.Equal(f.AdminAllowHosts, k.AdminAllowHosts) {
					t.Errorf("different configurations:\nflag: %+v\nkey:  %+v", f, k)
				}
			}
		})
	}
}

// TestNoGSO: GSO is on unless the config file says "gso: false" or
// --no-gso is given, which wins over the file for every relay.
func TestNoGSO(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "udpfwd.yaml")
	if err := os.WriteFile(file, []byte(`relays:
  - name: on
    listen: 127.0.0.1:0
    upstream: 127.0.0.1:9
  - name: off
    listen: 127.0.0.1:0
    upstream: 127.0.0.1:9
    gso: false
`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
		want map[string]bool // relay name -> NoGSO
	}{
		{"file", []string{"-c", file}, map[string]bool{"on": false, "off": true}},
		{"flag over file", []string{"-c", file, "--no-gso"}, map[string]bool{"on": true, "off": true}},
		{"relay flags", []string{"-r", "127.0.0.1:0", "127.0.0.1:9"}, map[string]bool{"default": false}},
		{"relay flags, --no-gso", []string{"--no-gso", "-r", "127.0.0.1:0", "127.0.0.1:9"}, map[string]bool{"default": true}},
		{"forward rules, --no-gso", []string{"--no-gso", "-f", writeRules(t, dir)}, map[string]bool{"line1": true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parse(tt.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			f, _, err := o.config()
			if err != nil {
				t.Fatal(err)
			}
			if len(f.Relays) != len(tt.want) {
				t.Fatalf("%d relays, want %d", len(f.Relays), len(tt.want))
			}
			for _, c := range f.Relays {
				if want, ok := tt.want[c.Name]; !ok || c.NoGSO != want {
					t.Errorf("relay %q: NoGSO %v, want %v", c.Name, c.NoGSO, want)
				}
			}
		})
	}
}

func writeRules(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "rules")
	// config only builds the relays' configuration: nothing is bound.
	if err := os.WriteFile(p, []byte("127.0.0.1,5300,0.0.0.0,0,127.0.0.1,9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
