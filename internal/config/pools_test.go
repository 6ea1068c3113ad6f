package config_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/udpfwd/udpfwd/internal/config"
)

// Port sets: a listen entry may list addresses and port ranges; each
// becomes listening addresses of its own, in the order written.
func TestListenSets(t *testing.T) {
	for _, tt := range []struct {
		name, listen string
		want         []string
	}{
		{"one", `"[::]:2408"`, []string{"[::]:2408"}},
		{"comma list", `"[::]:2408,[::]:500, [::]:1701,[::]:4500"`, []string{"[::]:2408", "[::]:500", "[::]:1701", "[::]:4500"}},
		{"range", "0.0.0.0:2400-2403", []string{"0.0.0.0:2400", "0.0.0.0:2401", "0.0.0.0:2402", "0.0.0.0:2403"}},
		{"range of one", "127.0.0.1:9-9", []string{"127.0.0.1:9"}},
		{"IPv6 range and a list", `["[::1]:7000-7001", "127.0.0.1:8000,127.0.0.1:8001"]`, []string{"[::1]:7000", "[::1]:7001", "127.0.0.1:8000", "127.0.0.1:8001"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, err := config.Parse([]byte("relays:\n  - name: a\n    listen: "+tt.listen+"\n    upstream: 192.0.2.1:2408\n"), "u.yaml")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range f.Relays[0].Listen {
				got = append(got, a.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("listen %s = %v, want %v", tt.listen, got, tt.want)
			}
		})
	}
	// The 54 ports WARP answers on, and more, fit; a range beyond the
	// limit is refused as it is read.
	f, err := config.FromArgs("0.0.0.0:2400-2655", "192.0.2.1:2408")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Validate(); err != nil || len(f.Relays[0].Listen) != config.MaxListen {
		t.Errorf("256 ports: %v, %d addresses", err, len(f.Relays[0].Listen))
	}
	if _, err := config.FromArgs("0.0.0.0:2400-2656", "192.0.2.1:2408"); err == nil ||
		err.Error() != `LISTEN: "0.0.0.0:2400-2656" is 257 ports: a relay listens on at most 256` {
		t.Errorf("257 ports: %v", err)
	}
	if _, err := config.FromArgs("0.0.0.0:2400-2500,0.0.0.0:3000-3200", "192.0.2.1:2408"); err != nil {
		t.Fatal(err)
	}
}

// A relay with a pool of endpoints: upstream as a list or as one
// comma-separated value, on the command line and in the file alike.
func TestUpstreamPools(t *testing.T) {
	want := []config.HostPort{
		{Name: "engage.cloudflareclient.com", Port: 2408},
		hp("162.159.192.1:2408"),
		hp("[2606:4700:d0::a29f:c001]:2408"),
	}
	for _, in := range []string{
		`[engage.cloudflareclient.com:2408, 162.159.192.1:2408, "[2606:4700:d0::a29f:c001]:2408"]`,
		`"engage.cloudflareclient.com:2408,162.159.192.1:2408,[2606:4700:d0::a29f:c001]:2408"`,
		"\n      - engage.cloudflareclient.com:2408\n      - 162.159.192.1:2408,[2606:4700:d0::a29f:c001]:2408",
	} {
		f, err := config.Parse([]byte("relays:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: "+in+"\n"), "u.yaml")
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		r := f.Relays[0]
		if got := r.Endpoints(); !slices.Equal(got, want) || r.Upstream != want[0] || r.FailoverAfter != config.DefaultFailoverAfter {
			t.Errorf("%s: endpoints %v, failover_after %d", in, got, r.FailoverAfter)
		}
		// check's output reads back to the same relay.
		out, err := f.Effective()
		if err != nil {
			t.Fatal(err)
		}
		back, err := config.Parse(out, "effective")
		if err != nil || !back.Relays[0].Equal(&f.Relays[0]) {
			t.Errorf("effective config of a pool: %v\n%s", err, out)
		}
	}
	f, err := config.FromArgs("127.0.0.1:1", "engage.cloudflareclient.com:2408,162.159.192.1:2408,[2606:4700:d0::a29f:c001]:2408")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Validate(); err != nil || !slices.Equal(f.Relays[0].Endpoints(), want) {
		t.Errorf("UPSTREAM with commas: %v, %v", err, f.Relays[0].Endpoints())
	}
	one, err := config.Parse([]byte("relays:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:1\n"), "u.yaml")
	if err != nil || len(one.Relays[0].Endpoints()) != 1 || len(one.Relays[0].MoreUpstreams) != 0 {
		t.Errorf("one upstream: %v, %+v", err, one.Relays)
	}
}

// What is wrong in a port set or a pool is said with the line that wrote
// it, even for the fifth port of a range or the second endpoint of a
// comma-separated value.
func TestPoolErrors(t *testing.T) {
	const head = "relays:\n  - name: a\n"
	for _, tt := range []struct {
		name, in string
		line     int
		path     string
		msg      string
	}{
		{"range reversed", head + "    listen: 127.0.0.1:9-5\n    upstream: 192.0.2.1:1\n", 3, "relays[0].listen[0]", `"127.0.0.1:9-5": want a range first-last within 1..65535`},
		{"range from port 0", head + "    listen: 127.0.0.1:0-5\n    upstream: 192.0.2.1:1\n", 3, "relays[0].listen[0]", "want a range first-last"},
		{"range end not a port", head + "    listen: 127.0.0.1:9-x\n    upstream: 192.0.2.1:1\n", 3, "relays[0].listen[0]", `port "x" is not 1..65535`},
		{"range too large", head + "    listen: 127.0.0.1:1000-1300\n    upstream: 192.0.2.1:1\n", 3, "relays[0].listen[0]", "is 301 ports: a relay listens on at most 256"},
		{"empty element", head + "    listen: \"127.0.0.1:1,,127.0.0.1:2\"\n    upstream: 192.0.2.1:1\n", 3, "relays[0].listen[0]", "an empty address in the list"},
		{"port in two ranges", head + "    listen:\n      - 127.0.0.1:2400-2410\n      - 127.0.0.1:2405\n    upstream: 192.0.2.1:1\n", 5, "relays[0].listen[11]", "127.0.0.1:2405 overlaps 127.0.0.1:2405 (relays[0].listen[5])"},
		{"upstream ports hold a port of a range", head + "    listen:\n      - 127.0.0.1:1\n      - 127.0.0.1:2400-2410\n    upstream: 192.0.2.1:1\n    upstream_ports: 2405-2500\n", 7, "relays[0].upstream_ports", "contains the port of 127.0.0.1:2405 (relays[0].listen[6])"},
		{"second endpoint bad", head + "    listen: 127.0.0.1:1\n    upstream: \"192.0.2.1:1,bad name:2\"\n", 4, "relays[0].upstream", `"bad name:2": "bad name" is neither`},
		{"endpoint twice", head + "    listen: 127.0.0.1:1\n    upstream:\n      - 192.0.2.1:1\n      - 192.0.2.2:1\n      - 192.0.2.1:1\n", 7, "relays[0].upstream[2]", "192.0.2.1:1 is also upstream[0]"},
		{"endpoint twice in one value", head + "    listen: 127.0.0.1:1\n    upstream: \"192.0.2.1:1,192.0.2.1:1\"\n", 4, "relays[0].upstream[1]", "192.0.2.1:1 is also upstream[0]"},
		{"endpoint of the other IP version than the bind", head + "    listen: 127.0.0.1:1\n    upstream: [\"192.0.2.1:1\", \"[2001:db8::1]:1\"]\n    upstream_bind: 0.0.0.0\n", 5, "relays[0].upstream_bind", "0.0.0.0 and the upstream 2001:db8::1 are not the same IP version"},
		{"too many endpoints", head + "    listen: 127.0.0.1:1\n    upstream: \"" + endpoints(17) + "\"\n", 4, "relays[0].upstream", "17 endpoints: at most 16"},
		{"failover_after 0", head + "    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:1\n    failover_after: 0\n", 5, "relays[0].failover_after", `"0" is not a whole number 1..100`},
		{"failover_after huge", head + "    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:1\n    failover_after: 101\n", 5, "relays[0].failover_after", `"101" is not a whole number 1..100`},
		{"forward with a pool", head + "    mode: forward\n    listen: 127.0.0.1:1\n    upstream: [192.0.2.1:1, 192.0.2.2:1]\n", 5, "relays[0].upstream", "a forward relay has one upstream, got 2"},
		{"forward failover_after", head + "    mode: forward\n    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:1\n    failover_after: 3\n", 6, "relays[0].failover_after", "not used in forward mode: a forward relay has one upstream"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, err := config.Parse([]byte(tt.in), "udpfwd.yaml")
			if err == nil {
				t.Fatalf("no error; parsed %+v", f)
			}
			want := fmt.Sprintf("udpfwd.yaml:%d: %s: ", tt.line, tt.path)
			if first, _, _ := strings.Cut(err.Error(), "\n"); !strings.HasPrefix(first, want) || !strings.Contains(first, tt.msg) {
				t.Errorf("got  %s\nwant %s...%s", first, want, tt.msg)
			}
		})
	}
}

// endpoints lists n distinct endpoints, comma-separated.
func endpoints(n int) string {
	var eps []string
	for i := range n {
		eps = append(eps, netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 2408).String())
	}
	return strings.Join(eps, ",")
}

// The command line's LISTEN and UPSTREAM take the same sets and pools, and
// their messages name them.
func TestFromArgsSets(t *testing.T) {
	for _, tt := range []struct{ listen, upstream, msg string }{
		{"127.0.0.1:1-0", "192.0.2.1:1", `LISTEN: "127.0.0.1:1-0": want a range first-last within 1..65535`},
		{"127.0.0.1:1,", "192.0.2.1:1", `LISTEN: "127.0.0.1:1,": an empty address in the list`},
		{"127.0.0.1:1", "192.0.2.1:1,:2", `UPSTREAM: ":2": the host is missing`},
	} {
		if _, err := config.FromArgs(tt.listen, tt.upstream); err == nil || err.Error() != tt.msg {
			t.Errorf("FromArgs(%q, %q) = %v, want %s", tt.listen, tt.upstream, err, tt.msg)
		}
	}
	f, err := config.FromArgs("127.0.0.1:1", "192.0.2.1:1,192.0.2.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Validate(); err == nil || err.Error() != "UPSTREAM: 192.0.2.1:1 is also upstream[0]" {
		t.Errorf("an endpoint twice in UPSTREAM: %v", err)
	}
}
