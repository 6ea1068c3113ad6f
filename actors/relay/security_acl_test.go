package relay_test

// The allow and deny lists (issue 6): client IDs and source CIDRs admit
// and refuse as configured, over IPv4 and IPv6. Loopback only.

import (
	"net/netip"
	"testing"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// The client ID allow-list (IDs given in the three forms WARP tools print)
// and the source CIDR allow and deny lists admit and refuse as configured,
// over IPv4 and IPv6.
func TestSecurityAllowLists(t *testing.T) {
	parseID := func(s string) wgproto.ClientID {
		id, err := wgproto.ParseClientID(s)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	prefixes := func(ss ...string) []netip.Prefix {
		var ps []netip.Prefix
		for _, s := range ss {
			ps = append(ps, netip.MustParsePrefix(s))
		}
		return ps
	}
	const (
		v4    = "127.0.0.1:0"
		v4two = "127.0.0.2:0"
		v6    = "[::1]:0"
	)
	type attempt struct {
		from  string
		id    wgproto.ClientID
		admit bool
		why   stats.Reason // if refused
	}
	qBoV := parseID("qBoV")       // a81a15
	hex := parseID("0a0b0c")      // 0a0b0c
	triple := parseID("1, 2, 3")  // 010203
	other := parseID("[9, 9, 9]") // 090909
	tests := []struct {
		name     string
		sec      config.Security
		attempts []attempt
	}{
		{"client IDs", config.Security{AllowClients: []wgproto.ClientID{qBoV, hex, triple}}, []attempt{
			{v4, qBoV, true, 0},
			{v4two, hex, true, 0},
			{v6, triple, true, 0},
			{v4, other, false, stats.ClientNotAllowed},
			{v6, wgproto.ClientID{0xa8, 0x1a, 0x16}, false, stats.ClientNotAllowed},
		}},
		{"allow CIDR", config.Security{AllowCIDRs: prefixes("127.0.0.1/32")}, []attempt{
			{v4, qBoV, true, 0},
			{v4two, hex, false, stats.SourceNotAllowed},
			{v6, triple, false, stats.SourceNotAllowed},
		}},
		{"deny CIDR", config.Security{DenyCIDRs: prefixes("127.0.0.2/32")}, []attempt{
			{v4, qBoV, true, 0},
			{v4two, hex, false, stats.SourceNotAllowed},
			{v6, triple, true, 0},
		}},
		{"deny wins over allow", config.Security{AllowCIDRs: prefixes("127.0.0.0/8", "::1/128"), DenyCIDRs: prefixes("127.0.0.2/32")}, []attempt{
			{v4, qBoV, true, 0},
			{v4two, hex, false, stats.SourceNotAllowed},
			{v6, triple, true, 0},
		}},
		{"allow IPv6", config.Security{AllowCIDRs: prefixes("::1/128")}, []attempt{
			{v6, qBoV, true, 0},
			{v4, hex, false, stats.SourceNotAllowed},
		}},
		{"deny IPv6", config.Security{DenyCIDRs: prefixes("::/0")}, []attempt{
			{v6, qBoV, false, stats.SourceNotAllowed},
			{v4, hex, true, 0},
		}},
		{"client IDs and sources", config.Security{AllowClients: []wgproto.ClientID{qBoV, hex}, AllowCIDRs: prefixes("127.0.0.1/32")}, []attempt{
			{v4, qBoV, true, 0},
			{v4two, hex, false, stats.SourceNotAllowed},
			{v4, other, false, stats.ClientNotAllowed},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, "127.0.0.1:0", true)
			r := startSecured(t, up.addr(), tt.sec, "127.0.0.1:0", "[::1]:0")
			ev := watchEvents(t, r)
			k := r.Counters()
			wantRefused := map[stats.Reason]uint64{}
			admitted := map[wgproto.ClientID]bool{}
			clients := make([]*client, len(tt.attempts))
			for i, a := range tt.attempts {
				clients[i] = newClient(t, a.from, listenerFor(t, r, a.from))
				clients[i].send(t, wgtest.Initiation(a.id, uint32(i+1)))
				if a.admit {
					admitted[a.id] = true
				} else {
					wantRefused[a.why]++
				}
			}
			// Wait for the events of the sessions opened, not their
			// counter, which moves first.
			eventually(t, "every attempt to be decided", func() bool {
				return uint64(count[*messages.SessionOpened](ev))+k.TotalDropped() >= uint64(len(tt.attempts))
			})
			ids := ev.opened()
			for i, a := range tt.attempts {
				from, in := ids[a.id]
				switch {
				case a.admit && !in:
					t.Errorf("%v from %s was refused", a.id, a.from)
				case a.admit && from != clients[i].addr():
					t.Errorf("%v opened from %v, want %v", a.id, from, clients[i].addr())
				case !a.admit && in:
					t.Errorf("%v from %s was admitted", a.id, a.from)
				}
				if a.admit {
					if got := clients[i].mustRecv(t); wgproto.ClientID(got[1:4]) != a.id {
						t.Errorf("%v got a reply for %x", a.id, got[1:4])
					}
				}
			}
			if len(ids) != len(admitted) {
				t.Errorf("%d sessions opened, want %d", len(ids), len(admitted))
			}
			var refused uint64
			for reason, n := range wantRefused {
				refused += n
				if got := k.Dropped(reason); got != n {
					t.Errorf("%d dropped for %s, want %d", got, reason, n)
				}
			}
			if got := k.TotalDropped(); got != refused {
				t.Errorf("%d dropped in all, want %d", got, refused)
			}
			// What reached the upstream: the admitted clients' initiations.
			for range admitted {
				if d := up.next(t); !admitted[wgproto.ClientID(d.data[1:4])] {
					t.Errorf("the upstream got a datagram of refused client %x", d.data[1:4])
				}
			}
		})
	}
}
