package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/udpfwd/udpfwd/internal/config"
)

// Over a static forward file, the flags that do not apply to forward
// relays are refused, as their keys would be in a config file; the others
// apply to every rule.
func TestForwardFileRefusesFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules")
	if err := os.WriteFile(path, []byte("127.0.0.1,5000,0.0.0.0,0,192.0.2.1,53\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	refused := map[string]string{
		"idle-timeout":              "1m",
		"upstream-public-key":       "bmXOC+F1FxEMF9dyiK2H5/1SUtzH0JuVo51h2wPfgyo=",
		"allow-client":              "qBoV",
		"allow-cidr":                "192.0.2.0/24",
		"deny-cidr":                 "192.0.2.0/24",
		"max-sessions":              "10",
		"max-sessions-per-ip":       "1",
		"new-sessions-per-ip":       "1",
		"new-sessions-per-ip-burst": "1",
		"client-rate":               "100",
		"state-file":                "/var/lib/udpfwd/state.json",
		"workers":                   "2",
		"failover-after":            "3",
		"zero-id":                   "track",
		"stamp-client-id":           "qBoV",
		"message-types":             "any",
		"cluster":                   "edge",
		"cluster-bind":              "127.0.0.1:7000",
		"cluster-peers":             "127.0.0.1:7000",
		"cluster-etcd":              "http://127.0.0.1:2379",
		"cluster-reply":             "ingress",
		"cluster-tls-cert":          "/etc/udpfwd/node.pem",
		"cluster-tls-key":           "/etc/udpfwd/node.key",
		"cluster-tls-ca":            "/etc/udpfwd/ca.pem",
		"cluster-insecure":          "true",
	}
	for _, fl := range config.Flags() {
		t.Run(fl.Name, func(t *testing.T) {
			f, err := config.ReadForward(path)
			if err != nil {
				t.Fatal(err)
			}
			value, bad := refused[fl.Name]
			if !bad {
				value = map[string]string{"log-level": "debug", "log-format": "json", "socket-buffer": "1MiB",
					"no-gso": "true", "upstream-bind": "0.0.0.0", "admin": "127.0.0.1:9090",
					"admin-token-file": "/etc/udpfwd/admin-token", "admin-allow-host": "relay.example.net",
					"reuse-port": "true"}[fl.Name]
			}
			if value == "" {
				t.Fatalf("no test value for --%s: add it to this test", fl.Name)
			}
			err = f.SetFlag(fl.Name, value)
			switch {
			case bad && (err == nil || !strings.HasPrefix(err.Error(), "--"+fl.Name+": not used in forward mode (-f): ")):
				t.Errorf("--%s with -f: %v; want it refused", fl.Name, err)
			case bad && strings.Contains(err.Error(), "\n"):
				t.Errorf("--%s with -f: more than one line: %q", fl.Name, err)
			case !bad && err != nil:
				t.Errorf("--%s with -f: %v", fl.Name, err)
			}
		})
	}
}
