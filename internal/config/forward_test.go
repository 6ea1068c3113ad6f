package config_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/udpfwd/udpfwd/internal/config"
)

func TestParseForwardRules(t *testing.T) {
	in := `# static rules
127.0.0.1,5000,127.0.0.1,0,127.0.0.1,6000
  ::1 , 5001 , ::1 , 7001 , localhost , 6001   # trailing comment
127.0.0.1,5002,0.0.0.0,0,10.0.0.1,6002;127.0.0.1,5003,0.0.0.0,0,[::1],6003

`
	rules, err := config.ParseForwardRules(strings.NewReader(in), "rules")
	if err != nil {
		t.Fatal(err)
	}
	want := []config.ForwardRule{
		{Line: 2, In: netip.MustParseAddrPort("127.0.0.1:5000"), Out: netip.MustParseAddrPort("127.0.0.1:0"), Dest: hp("127.0.0.1:6000")},
		{Line: 3, In: netip.MustParseAddrPort("[::1]:5001"), Out: netip.MustParseAddrPort("[::1]:7001"), Dest: config.HostPort{Name: "localhost", Port: 6001}},
		{Line: 4, Index: 1, In: netip.MustParseAddrPort("127.0.0.1:5002"), Out: netip.MustParseAddrPort("0.0.0.0:0"), Dest: hp("10.0.0.1:6002")},
		{Line: 4, Index: 2, In: netip.MustParseAddrPort("127.0.0.1:5003"), Out: netip.MustParseAddrPort("0.0.0.0:0"), Dest: hp("[::1]:6003")},
	}
	if len(rules) != len(want) {
		t.Fatalf("got %d rules, want %d: %+v", len(rules), len(want), rules)
	}
	for i := range want {
		if rules[i] != want[i] {
			t.Errorf("rule %d = %+v, want %+v", i, rules[i], want[i])
		}
	}
}

func hp(s string) config.HostPort { return config.HostPortFrom(netip.MustParseAddrPort(s)) }

func TestParseForwardRulesErrors(t *testing.T) {
	tests := []struct{ name, in, msg string }{
		{"five fields", "127.0.0.1,1,127.0.0.1,0,127.0.0.1", "rules:1: "},
		{"seven fields", "\n127.0.0.1,1,127.0.0.1,0,127.0.0.1,2,3", "rules:2: "},
		{"bad in-addr", "localhost,1,127.0.0.1,0,127.0.0.1,2", "in-addr"},
		{"in-port 0", "127.0.0.1,0,127.0.0.1,0,127.0.0.1,2", "in-port"},
		{"in-port too big", "127.0.0.1,65536,127.0.0.1,0,127.0.0.1,2", "in-port"},
		{"bad out-port", "127.0.0.1,1,127.0.0.1,-1,127.0.0.1,2", "out-port"},
		{"dest-port 0", "127.0.0.1,1,127.0.0.1,0,127.0.0.1,0", "dest-port"},
		{"empty dest", "127.0.0.1,1,127.0.0.1,0,,2", "dest-addr"},
		{"duplicate in", "127.0.0.1,1,127.0.0.1,0,127.0.0.1,2\n127.0.0.1,1,127.0.0.1,0,127.0.0.1,3", "rules:2: 127.0.0.1:1 is already used on line 1"},
		{"nothing", "# only comments\n\n;;\n", "no rules"},
		{"second rule of a line", "127.0.0.1,1,127.0.0.1,0,127.0.0.1,2; 127.0.0.1,x,127.0.0.1,0,127.0.0.1,2", "rules:1:2: in-port"},
		{"duplicate in on a line", "127.0.0.1,1,127.0.0.1,0,127.0.0.1,2\n127.0.0.1,3,127.0.0.1,0,127.0.0.1,2;127.0.0.1,1,127.0.0.1,0,127.0.0.1,3", "rules:2:2: 127.0.0.1:1 is already used on line 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.ParseForwardRules(strings.NewReader(tt.in), "rules")
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %v, want one containing %q", err, tt.msg)
			}
		})
	}
}
