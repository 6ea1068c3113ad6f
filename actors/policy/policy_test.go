package policy_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// waitTimeout bounds every wait for an answer or a message. It only costs
// time when a test fails, so it is generous: a -race run on two busy cores
// can be slow by seconds.
const waitTimeout = 30 * time.Second

var (
	idA = wgproto.ClientID{0xa8, 0x1a, 0x15}
	idB = wgproto.ClientID{0x01, 0x02, 0x03}
	idC = wgproto.ClientID{0x0c, 0x0c, 0x0c}
)

func newSystem(t *testing.T) *actor.ActorSystem {
	t.Helper()
	sys := actor.NewActorSystem()
	t.Cleanup(sys.Shutdown)
	return sys
}

// ask spawns one policy actor from f, as the supervisor does for a new
// client, asks it once and returns its answer's reason ("" if admitted)
// and the actor, which the caller stops.
func ask(t *testing.T, sys *actor.ActorSystem, f policy.Factory, m *messages.AdmitSession) (string, *actor.PID) {
	t.Helper()
	pid := sys.Root.Spawn(f())
	res, err := sys.Root.RequestFuture(pid, m, waitTimeout).Result()
	if err != nil {
		t.Fatalf("policy did not answer %+v: %v", m, err)
	}
	switch r := res.(type) {
	case *messages.SessionAdmitted:
		if r.Client != m.Client {
			t.Fatalf("admitted %v, asked about %v", r.Client, m.Client)
		}
		return "", pid
	case *messages.SessionRefused:
		if r.Client != m.Client || r.Reason == "" {
			t.Fatalf("refused %v with reason %q, asked about %v", r.Client, r.Reason, m.Client)
		}
		return r.Reason, pid
	}
	t.Fatalf("policy answered %T", res)
	return "", nil
}

// stop stops a policy actor and waits until it has stopped, as the
// supervisor does when a session ends.
func stop(t *testing.T, sys *actor.ActorSystem, pid *actor.PID) {
	t.Helper()
	if err := sys.Root.StopFuture(pid).Wait(); err != nil {
		t.Fatal(err)
	}
}

func admit(id wgproto.ClientID, from string) *messages.AdmitSession {
	return &messages.AdmitSession{Client: id, From: netip.MustParseAddrPort(from)}
}

func TestClientIDs(t *testing.T) {
	sys := newSystem(t)
	allowB, err := wgproto.ParseClientID("1,2,3")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		allowed []wgproto.ClientID
		client  wgproto.ClientID
		want    string
	}{
		{"listed", []wgproto.ClientID{idA, allowB}, idA, ""},
		{"listed, parsed from a triple", []wgproto.ClientID{idA, allowB}, idB, ""},
		{"not listed", []wgproto.ClientID{idA, allowB}, idC, messages.RefusedClientNotAllowed},
		{"empty list admits nobody", nil, idA, messages.RefusedClientNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, pid := ask(t, sys, policy.ClientIDs(tt.allowed), admit(tt.client, "192.0.2.1:5000"))
			defer stop(t, sys, pid)
			if got != tt.want {
				t.Fatalf("reason %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSources(t *testing.T) {
	sys := newSystem(t)
	p := netip.MustParsePrefix
	tests := []struct {
		name        string
		allow, deny []netip.Prefix
		from        string
		want        string
	}{
		{"no lists admit all", nil, nil, "203.0.113.5:1", ""},
		{"in allow", []netip.Prefix{p("192.0.2.0/24")}, nil, "192.0.2.77:1", ""},
		{"outside allow", []netip.Prefix{p("192.0.2.0/24")}, nil, "192.0.3.1:1", messages.RefusedSourceNotAllowed},
		{"in deny", nil, []netip.Prefix{p("198.51.100.0/24")}, "198.51.100.9:1", messages.RefusedSourceDenied},
		{"outside deny", nil, []netip.Prefix{p("198.51.100.0/24")}, "198.51.101.9:1", ""},
		{"deny wins over allow", []netip.Prefix{p("0.0.0.0/0")}, []netip.Prefix{p("192.0.2.7/32")}, "192.0.2.7:1", messages.RefusedSourceDenied},
		{"IPv4-mapped source matches an IPv4 allow", []netip.Prefix{p("192.0.2.0/24")}, nil, "[::ffff:192.0.2.7]:1", ""},
		{"IPv4-mapped source matches an IPv4 deny", nil, []netip.Prefix{p("192.0.2.0/24")}, "[::ffff:192.0.2.7]:1", messages.RefusedSourceDenied},
		{"IPv4-mapped prefix matches an IPv4 source", nil, []netip.Prefix{p("::ffff:192.0.2.0/120")}, "192.0.2.7:1", messages.RefusedSourceDenied},
		{"unmasked prefix is masked", []netip.Prefix{p("192.0.2.77/24")}, nil, "192.0.2.1:1", ""},
		{"IPv6 allow", []netip.Prefix{p("2001:db8::/32")}, nil, "[2001:db8:5::1]:1", ""},
		{"IPv6 outside allow", []netip.Prefix{p("2001:db8::/32")}, nil, "[2001:db9::1]:1", messages.RefusedSourceNotAllowed},
		{"IPv4 allow does not admit IPv6", []netip.Prefix{p("0.0.0.0/0")}, nil, "[2001:db8::1]:1", messages.RefusedSourceNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, pid := ask(t, sys, policy.Sources(tt.allow, tt.deny), admit(idA, tt.from))
			defer stop(t, sys, pid)
			if got != tt.want {
				t.Fatalf("reason %q, want %q", got, tt.want)
			}
		})
	}
}

// TestCaps opens sessions against the caps and checks the reasons; closing
// a session (stopping its policy actor) frees its place.
func TestCaps(t *testing.T) {
	sys := newSystem(t)
	caps := limits.NewCaps(limits.CapsConfig{MaxSessions: 3, MaxPerSource: 2, SourceRate: 0.001, SourceBurst: 2})
	f := policy.CapsShared(caps)

	r1, p1 := ask(t, sys, f, admit(idA, "192.0.2.1:1"))
	r2, p2 := ask(t, sys, f, admit(idB, "192.0.2.1:2"))
	r3, p3 := ask(t, sys, f, admit(idC, "192.0.2.1:3"))
	if r1 != "" || r2 != "" || r3 != messages.RefusedMaxSessionsPerIP {
		t.Fatalf("reasons %q %q %q, want admitted, admitted, %s", r1, r2, r3, messages.RefusedMaxSessionsPerIP)
	}
	stop(t, sys, p3) // a refusal holds nothing
	r4, p4 := ask(t, sys, f, admit(idC, "198.51.100.1:1"))
	r5, p5 := ask(t, sys, f, admit(wgproto.ClientID{9, 9, 9}, "198.51.100.2:1"))
	if r4 != "" || r5 != messages.RefusedMaxSessions {
		t.Fatalf("reasons %q %q, want admitted, %s", r4, r5, messages.RefusedMaxSessions)
	}
	stop(t, sys, p5)
	// The first session ends: its place is free again, but its source
	// has used its burst of new sessions.
	stop(t, sys, p1)
	if total, from := caps.Sessions(netip.MustParseAddr("192.0.2.1")); total != 2 || from != 1 {
		t.Fatalf("after a session ended: %d sessions, %d from its source; want 2, 1", total, from)
	}
	r6, p6 := ask(t, sys, f, admit(idA, "192.0.2.1:4"))
	if r6 != messages.RefusedNewSessionRate {
		t.Fatalf("reason %q, want %s", r6, messages.RefusedNewSessionRate)
	}
	stop(t, sys, p6)
	r7, p7 := ask(t, sys, f, admit(idA, "198.51.100.3:1"))
	if r7 != "" {
		t.Fatalf("reason %q, want admitted", r7)
	}
	for _, p := range []*actor.PID{p2, p4, p7} {
		stop(t, sys, p)
	}
	if total, _ := caps.Sessions(netip.Addr{}); total != 0 {
		t.Fatalf("%d sessions counted after every policy stopped", total)
	}
}

// TestCapsBurst asks many policy actors at once, as the supervisor does
// when a burst of new client IDs arrives before any answer: the cap holds.
func TestCapsBurst(t *testing.T) {
	sys := newSystem(t)
	f := policy.Caps(50, 0, 0, 0)
	var futures []*actor.Future
	var pids []*actor.PID
	for i := range 200 {
		pid := sys.Root.Spawn(f())
		pids = append(pids, pid)
		futures = append(futures, sys.Root.RequestFuture(pid,
			admit(wgproto.ClientID{1, byte(i >> 8), byte(i)}, "192.0.2.1:1"), waitTimeout))
	}
	admitted := 0
	for _, fu := range futures {
		res, err := fu.Result()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := res.(*messages.SessionAdmitted); ok {
			admitted++
		} else if r := res.(*messages.SessionRefused); r.Reason != messages.RefusedMaxSessions {
			t.Fatalf("refused with %q", r.Reason)
		}
	}
	if admitted != 50 {
		t.Fatalf("admitted %d of 200, want 50", admitted)
	}
	for _, pid := range pids {
		stop(t, sys, pid)
	}
}

// probe is a stand-in session: it hands every ApplyLimits it gets to a
// channel.
func probe(t *testing.T, sys *actor.ActorSystem) (*actor.PID, <-chan *messages.ApplyLimits) {
	t.Helper()
	ch := make(chan *messages.ApplyLimits, 4)
	pid := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*messages.ApplyLimits); ok {
			ch <- m
		}
	}))
	t.Cleanup(func() { sys.Root.Stop(pid) })
	return pid, ch
}

func TestClientRate(t *testing.T) {
	sys := newSystem(t)
	def := limits.Limits{DatagramsPerSecond: 1000, BytesPerSecond: 1e6}
	vip := limits.Limits{DatagramsPerSecond: 5000, BytesPerSecond: 1e7, DatagramBurst: 100, ByteBurst: 200_000}
	f := policy.ClientRate(def, map[wgproto.ClientID]limits.Limits{idB: vip, idC: {}})
	tests := []struct {
		name   string
		client wgproto.ClientID
		want   *limits.Limits // nil: no message
	}{
		{"default", idA, &def},
		{"per client", idB, &vip},
		{"per client unlimited", idC, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, pid := ask(t, sys, f, admit(tt.client, "192.0.2.1:1"))
			defer stop(t, sys, pid)
			if got != "" {
				t.Fatalf("refused: %q", got)
			}
			session, ch := probe(t, sys)
			sys.Root.Send(pid, &messages.SessionStarted{Session: session})
			if tt.want == nil {
				// Nothing may arrive; a marker sent after SessionStarted
				// through the same actor proves it was handled.
				if _, err := sys.Root.RequestFuture(pid, admit(tt.client, "192.0.2.1:1"), waitTimeout).Result(); err != nil {
					t.Fatal(err)
				}
				select {
				case m := <-ch:
					t.Fatalf("unlimited client got %+v", m)
				default:
				}
				return
			}
			select {
			case m := <-ch:
				if m.Limits() != *tt.want {
					t.Fatalf("session got %+v, want %+v", m.Limits(), *tt.want)
				}
			case <-time.After(waitTimeout):
				t.Fatal("the session got no ApplyLimits")
			}
		})
	}
}

// TestChain combines the ACLs, the caps and the rate limit the way the
// relay does: the first refusal answers, and SessionStarted reaches the
// rate policy through the chain.
func TestChain(t *testing.T) {
	sys := newSystem(t)
	lim := limits.Limits{DatagramsPerSecond: 100}
	caps := limits.NewCaps(limits.CapsConfig{MaxSessions: 1})
	f := policy.Chain(
		policy.ClientIDs([]wgproto.ClientID{idA, idB}),
		policy.Sources(nil, []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}),
		policy.CapsShared(caps),
		policy.ClientRate(lim, nil),
	)
	tests := []struct {
		name   string
		client wgproto.ClientID
		from   string
		want   string
	}{
		{"not allowed", idC, "192.0.2.1:1", messages.RefusedClientNotAllowed},
		{"denied source", idA, "198.51.100.1:1", messages.RefusedSourceDenied},
		{"admitted", idA, "192.0.2.1:1", ""},
		{"over the cap", idB, "192.0.2.2:1", messages.RefusedMaxSessions},
	}
	var admitted *actor.PID
	for _, tt := range tests {
		got, pid := ask(t, sys, f, admit(tt.client, tt.from))
		if got != tt.want {
			t.Fatalf("%s: reason %q, want %q", tt.name, got, tt.want)
		}
		if got == "" {
			admitted = pid
			continue
		}
		stop(t, sys, pid)
	}
	if total, _ := caps.Sessions(netip.Addr{}); total != 1 {
		t.Fatalf("%d sessions counted, want 1 (refusals before the caps hold nothing)", total)
	}
	session, ch := probe(t, sys)
	sys.Root.Send(admitted, &messages.SessionStarted{Session: session})
	select {
	case m := <-ch:
		if m.Limits() != lim {
			t.Fatalf("session got %+v, want %+v", m.Limits(), lim)
		}
	case <-time.After(waitTimeout):
		t.Fatal("SessionStarted did not reach the rate policy through the chain")
	}
	stop(t, sys, admitted)
	if total, _ := caps.Sessions(netip.Addr{}); total != 0 {
		t.Fatalf("%d sessions counted after the chain stopped, want 0", total)
	}
}
