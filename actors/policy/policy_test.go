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
// client, asks it once and returns its answer's reason ("" if admitted),
// the answer if admitted, and the actor, which the caller stops.
func ask(t *testing.T, sys *actor.ActorSystem, f policy.Factory, m *messages.AdmitSession) (string, *actor.PID) {
	t.Helper()
	reason, _, pid := answer(t, sys, f, m)
	return reason, pid
}

func answer(t *testing.T, sys *actor.ActorSystem, f policy.Factory, m *messages.AdmitSession) (string, *messages.SessionAdmitted, *actor.PID) {
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
		return "", r, pid
	case *messages.SessionRefused:
		if r.Client != m.Client || r.Reason == "" {
			t.Fatalf("refused %v with reason %q, asked about %v", r.Client, r.Reason, m.Client)
		}
		return r.Reason, nil, pid
	}
	t.Fatalf("policy answered %T", res)
	return "", nil, nil
}

// stop stops a policy actor and waits until it has stopped, as the
// supervisor does once it has answered.
func stop(t *testing.T, sys *actor.ActorSystem, pid *actor.PID) {
	t.Helper()
	if err := sys.Root.StopFuture(pid).Wait(); err != nil {
		t.Fatal(err)
	}
}

// release gives back what an answer holds, as the supervisor does when
// the session ends.
func release(a *messages.SessionAdmitted) {
	if a != nil && a.Release != nil {
		a.Release()
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

// TestCaps opens sessions against the caps and checks the reasons. The
// policy actor holds nothing once it has answered: a session's place is
// given back by its answer's Release, which the supervisor calls when the
// session ends.
func TestCaps(t *testing.T) {
	sys := newSystem(t)
	caps := limits.NewCaps(limits.CapsConfig{MaxSessions: 3, MaxPerSource: 2, SourceRate: 0.001, SourceBurst: 2})
	f := policy.CapsShared(caps)
	get := func(id wgproto.ClientID, from string) (string, *messages.SessionAdmitted) {
		t.Helper()
		reason, a, pid := answer(t, sys, f, admit(id, from))
		stop(t, sys, pid)
		if reason == "" && (a.Release == nil || a.Stay) {
			t.Fatalf("admitted with %+v: want a Release and no Stay", a)
		}
		return reason, a
	}
	r1, a1 := get(idA, "192.0.2.1:1")
	r2, a2 := get(idB, "192.0.2.1:2")
	r3, _ := get(idC, "192.0.2.1:3")
	if r1 != "" || r2 != "" || r3 != messages.RefusedMaxSessionsPerIP {
		t.Fatalf("reasons %q %q %q, want admitted, admitted, %s", r1, r2, r3, messages.RefusedMaxSessionsPerIP)
	}
	if total, _ := caps.Sessions(netip.Addr{}); total != 2 {
		t.Fatalf("%d sessions counted after their policy actors stopped, want 2 (a refusal holds nothing)", total)
	}
	r4, a4 := get(idC, "198.51.100.1:1")
	r5, _ := get(wgproto.ClientID{9, 9, 9}, "198.51.100.2:1")
	if r4 != "" || r5 != messages.RefusedMaxSessions {
		t.Fatalf("reasons %q %q, want admitted, %s", r4, r5, messages.RefusedMaxSessions)
	}
	// The first session ends: its place is free again, but its source
	// has used its burst of new sessions.
	release(a1)
	if total, from := caps.Sessions(netip.MustParseAddr("192.0.2.1")); total != 2 || from != 1 {
		t.Fatalf("after a session ended: %d sessions, %d from its source; want 2, 1", total, from)
	}
	r6, _ := get(idA, "192.0.2.1:4")
	if r6 != messages.RefusedNewSessionRate {
		t.Fatalf("reason %q, want %s", r6, messages.RefusedNewSessionRate)
	}
	r7, a7 := get(idA, "198.51.100.3:1")
	if r7 != "" {
		t.Fatalf("reason %q, want admitted", r7)
	}
	for _, a := range []*messages.SessionAdmitted{a2, a4, a7} {
		release(a)
	}
	if total, _ := caps.Sessions(netip.Addr{}); total != 0 {
		t.Fatalf("%d sessions counted after every session ended", total)
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
	var admitted []*messages.SessionAdmitted
	for _, fu := range futures {
		res, err := fu.Result()
		if err != nil {
			t.Fatal(err)
		}
		if a, ok := res.(*messages.SessionAdmitted); ok {
			admitted = append(admitted, a)
		} else if r := res.(*messages.SessionRefused); r.Reason != messages.RefusedMaxSessions {
			t.Fatalf("refused with %q", r.Reason)
		}
	}
	if len(admitted) != 50 {
		t.Fatalf("admitted %d of 200, want 50", len(admitted))
	}
	for _, pid := range pids {
		stop(t, sys, pid)
	}
	for _, a := range admitted {
		release(a)
	}
}

// TestClientRate: the limit comes in the answer, for the session to start
// with; the policy does not stay.
func TestClientRate(t *testing.T) {
	sys := newSystem(t)
	def := limits.Limits{DatagramsPerSecond: 1000, BytesPerSecond: 1e6}
	vip := limits.Limits{DatagramsPerSecond: 5000, BytesPerSecond: 1e7, DatagramBurst: 100, ByteBurst: 200_000}
	f := policy.ClientRate(def, map[wgproto.ClientID]limits.Limits{idB: vip, idC: {}})
	tests := []struct {
		name   string
		client wgproto.ClientID
		want   *limits.Limits // nil: no limit
	}{
		{"default", idA, &def},
		{"per client", idB, &vip},
		{"per client unlimited", idC, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, a, pid := answer(t, sys, f, admit(tt.client, "192.0.2.1:1"))
			defer stop(t, sys, pid)
			if got != "" {
				t.Fatalf("refused: %q", got)
			}
			if a.Stay || a.Release != nil {
				t.Fatalf("answer %+v: the rate policy has nothing to hold or do later", a)
			}
			switch {
			case tt.want == nil && a.Limits != nil:
				t.Fatalf("unlimited client got %+v", *a.Limits)
			case tt.want != nil && (a.Limits == nil || a.Limits.Limits() != *tt.want):
				t.Fatalf("answer's limits %+v, want %+v", a.Limits, *tt.want)
			}
		})
	}
}

// stayer is an operator's policy that stays with its session to push a
// limit once it started.
func stayer(lim limits.Limits, stopped chan<- struct{}) policy.Factory {
	return func() *actor.Props {
		return actor.PropsFromFunc(func(ctx actor.Context) {
			switch m := ctx.Message().(type) {
			case *messages.AdmitSession:
				ctx.Respond(&messages.SessionAdmitted{Client: m.Client, Stay: true})
			case *messages.SessionStarted:
				l := messages.ApplyLimits(lim)
				ctx.Send(m.Session, &l)
			case *actor.Stopped:
				close(stopped)
			}
		})
	}
}

// TestChain combines the ACLs, the caps and the rate limit the way the
// relay does, with an operator's policy that stays: the first refusal
// answers and gives back what the policies before it hold; an admission
// carries the rate limit and one Release for the caps, stays because one
// member does, and hands SessionStarted to that member, which pushes its
// limit to the session; the members that did not stay are gone.
func TestChain(t *testing.T) {
	sys := newSystem(t)
	lim := limits.Limits{DatagramsPerSecond: 100}
	pushed := limits.Limits{DatagramsPerSecond: 7}
	caps := limits.NewCaps(limits.CapsConfig{MaxSessions: 1})
	stopped := make(chan struct{})
	f := policy.Chain(
		policy.ClientIDs([]wgproto.ClientID{idA, idB}),
		policy.Sources(nil, []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}),
		policy.CapsShared(caps),
		policy.ClientRate(lim, nil),
		stayer(pushed, stopped),
	)
	refusing := policy.Chain(policy.CapsShared(caps), refuseAll)
	tests := []struct {
		name   string
		f      policy.Factory
		client wgproto.ClientID
		from   string
		want   string
	}{
		{"not allowed", f, idC, "192.0.2.1:1", messages.RefusedClientNotAllowed},
		{"denied source", f, idA, "198.51.100.1:1", messages.RefusedSourceDenied},
		{"refused after the caps", refusing, idA, "192.0.2.1:1", "test"},
		{"admitted", f, idA, "192.0.2.1:1", ""},
		{"over the cap", f, idB, "192.0.2.2:1", messages.RefusedMaxSessions},
	}
	var admitted *actor.PID
	var a *messages.SessionAdmitted
	for _, tt := range tests {
		got, ans, pid := answer(t, sys, tt.f, admit(tt.client, tt.from))
		if got != tt.want {
			t.Fatalf("%s: reason %q, want %q", tt.name, got, tt.want)
		}
		if got == "" {
			admitted, a = pid, ans
			continue
		}
		stop(t, sys, pid)
	}
	if total, _ := caps.Sessions(netip.Addr{}); total != 1 {
		t.Fatalf("%d sessions counted, want 1 (refusals hold nothing)", total)
	}
	if !a.Stay || a.Release == nil || a.Limits == nil || a.Limits.Limits() != lim {
		t.Fatalf("the chain answered %+v: want Stay, a Release and the rate limit", a)
	}
	session, ch := probe(t, sys)
	sys.Root.Send(admitted, &messages.SessionStarted{Session: session})
	select {
	case m := <-ch:
		if m.Limits() != pushed {
			t.Fatalf("session got %+v, want %+v", m.Limits(), pushed)
		}
	case <-time.After(waitTimeout):
		t.Fatal("SessionStarted did not reach the policy that stayed")
	}
	stop(t, sys, admitted)
	select {
	case <-stopped:
	case <-time.After(waitTimeout):
		t.Fatal("the policy that stayed was not stopped with the chain")
	}
	if total, _ := caps.Sessions(netip.Addr{}); total != 1 {
		t.Fatalf("%d sessions counted after the chain stopped, want 1: the place is the answer's to give back", total)
	}
	a.Release()
	if total, _ := caps.Sessions(netip.Addr{}); total != 0 {
		t.Fatalf("%d sessions counted after Release, want 0", total)
	}
}

// refuseAll refuses every session with reason "test".
func refuseAll() *actor.Props {
	return actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*messages.AdmitSession); ok {
			ctx.Respond(&messages.SessionRefused{Client: m.Client, Reason: "test"})
		}
	})
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

// A chain stopped before it answered (the supervisor gave up waiting)
// gives back what the members before the one it waits for hold.
func TestChainStoppedWaiting(t *testing.T) {
	sys := newSystem(t)
	caps := limits.NewCaps(limits.CapsConfig{})
	asked := make(chan struct{})
	silent := func() *actor.Props {
		return actor.PropsFromFunc(func(ctx actor.Context) {
			if _, ok := ctx.Message().(*messages.AdmitSession); ok {
				close(asked)
			}
		})
	}
	pid := sys.Root.Spawn(policy.Chain(policy.CapsShared(caps), silent)())
	sys.Root.Request(pid, admit(idA, "192.0.2.1:1"))
	select {
	case <-asked:
	case <-time.After(waitTimeout):
		t.Fatal("the chain never asked its second member")
	}
	if total, _ := caps.Sessions(netip.Addr{}); total != 1 {
		t.Fatalf("%d sessions counted while the chain waits, want 1", total)
	}
	stop(t, sys, pid)
	if total, _ := caps.Sessions(netip.Addr{}); total != 0 {
		t.Fatalf("%d sessions counted after the chain stopped unanswered, want 0", total)
	}
}
