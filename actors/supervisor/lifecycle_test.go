package supervisor_test

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap/zaptest"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/actors/session"
	"github.com/udpfwd/udpfwd/actors/supervisor"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// waitTimeout bounds every wait for something that should happen. It only
// costs time when a test fails, so it is generous: a -race run on two busy
// cores can be slow by seconds.
const waitTimeout = 30 * time.Second

var (
	idA = wgproto.ClientID{0xa8, 0x1a, 0x15}
	idB = wgproto.ClientID{0x01, 0x02, 0x03}
	idC = wgproto.ClientID{0x0c, 0x0c, 0x0c}
)

// fixture is a supervisor in an actor system of its own, with an upstream
// socket on loopback that reads nothing (sessions only need to connect to
// it) and a writer that drops every reply.
type fixture struct {
	sys      *actor.ActorSystem
	pid      *actor.PID
	counters *stats.Counters
	poller   *session.Poller
}

func start(t *testing.T, f policy.Factory) *fixture {
	t.Helper()
	return startWith(t, f, nil)
}

// startWith is start with the configuration changed by change.
func startWith(t *testing.T, f policy.Factory, change func(*supervisor.Config)) *fixture {
	t.Helper()
	up, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	x := &fixture{sys: actor.NewActorSystem(), counters: &stats.Counters{}}
	x.poller = newPoller(t, x.sys)
	writer := x.sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*messages.ClientReplies); ok {
			m.Batch().Release()
		}
	}))
	cfg := supervisor.Config{
		Relay:       "test",
		Upstream:    up.LocalAddr().(*net.UDPAddr).AddrPort(),
		Writers:     []*actor.PID{writer},
		IdleTimeout: time.Hour, // the tests send SessionIdle themselves
		Policy:      f,
		Counters:    x.counters,
		Logger:      zaptest.NewLogger(t),
		Poller:      x.poller,
	}
	if change != nil {
		change(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	x.pid = x.sys.Root.Spawn(supervisor.Props(cfg))
	t.Cleanup(func() {
		x.stop(t)
		x.sys.Shutdown()
	})
	return x
}

// stop stops the supervisor (once), and with it every session: each
// leaves the poller as it stops.
func (x *fixture) stop(t *testing.T) {
	t.Helper()
	if x.pid == nil {
		return
	}
	if err := x.sys.Root.StopFuture(x.pid).Wait(); err != nil {
		t.Error(err)
	}
	x.pid = nil
	if n := x.poller.Len(); n != 0 {
		t.Errorf("%d upstream sockets still registered with the poller after every session stopped", n)
	}
}

// newPoller starts a poller for sessions in sys, closed at the end of the
// test.
func newPoller(tb testing.TB, sys *actor.ActorSystem) *session.Poller {
	tb.Helper()
	p, err := session.NewPoller(sys.Root, udpio.PollerConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// initiate sends the supervisor one read batch with an initiation from
// each client.
func (x *fixture) initiate(ids ...wgproto.ClientID) {
	b := udpio.GetBatch()
	for i, id := range ids {
		buf := udpio.GetBuffer()
		n := copy(buf[:], wgtest.Initiation(id, uint32(i+1)))
		b.Add(udpio.Datagram{Buf: buf, N: n, Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(5000+i))})
	}
	x.sys.Root.Send(x.pid, (*messages.ClientDatagrams)(b))
}

// TestEventsFollowCounters ends sessions every way a session ends, and
// checks, in the event stream's handler (which runs as the event is
// published), that the counters about each event have moved already: a
// test may wait for an event and then read the counters.
func TestEventsFollowCounters(t *testing.T) {
	x := start(t, nil)
	var mu sync.Mutex
	var problems []string
	seen := map[stats.Event]uint64{}
	live := 0
	events := make(chan any, 16)
	sub := x.sys.EventStream.Subscribe(func(evt any) {
		var kind stats.Event
		switch evt.(type) {
		case *messages.SessionOpened:
			kind, live = stats.SessionOpened, live+1
		case *messages.SessionExpired:
			kind, live = stats.SessionExpired, live-1
		case *messages.SessionFailed:
			kind, live = stats.SessionFailed, live-1
		case *messages.SessionClosed:
			kind, live = stats.SessionClosed, live-1
		default:
			return
		}
		seen[kind]++
		mu.Lock()
		if got := x.counters.Events(kind); got != seen[kind] {
			problems = append(problems, fmt.Sprintf("%T published with %s counted %d times, want %d", evt, kind, got, seen[kind]))
		}
		if got := x.counters.Live(); got != live {
			problems = append(problems, fmt.Sprintf("%T published with %d sessions live, want %d", evt, got, live))
		}
		mu.Unlock()
		events <- evt
	})
	defer x.sys.EventStream.Unsubscribe(sub)
	next := func() any {
		t.Helper()
		select {
		case evt := <-events:
			return evt
		case <-time.After(waitTimeout):
			t.Fatal("no event within the timeout")
			return nil
		}
	}

	x.initiate(idA, idB, idC)
	opened := map[wgproto.ClientID]messages.SessionInfo{}
	for range 3 {
		evt, ok := next().(*messages.SessionOpened)
		if !ok {
			t.Fatalf("got %T, want SessionOpened", evt)
		}
		opened[evt.Client] = evt.SessionInfo
	}
	x.sys.Root.Send(x.pid, &messages.SessionIdle{Session: opened[idA], Side: "client"})
	if evt, ok := next().(*messages.SessionExpired); !ok || evt.Client != idA {
		t.Fatalf("got %+v, want idA's SessionExpired", evt)
	}
	x.sys.Root.Send(x.pid, &messages.Crash{Client: idB, Reason: "test"})
	if evt, ok := next().(*messages.SessionFailed); !ok || evt.Client != idB {
		t.Fatalf("got %+v, want idB's SessionFailed", evt)
	}
	x.stop(t)
	if evt, ok := next().(*messages.SessionClosed); !ok || evt.Client != idC {
		t.Fatalf("got %+v, want idC's SessionClosed", evt)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Error(p)
	}
	if x.counters.Live() != 0 {
		t.Errorf("%d sessions live after stop", x.counters.Live())
	}
}

// TestFailedPolicy: a policy actor that panics refuses its admission: the
// initiation it held is counted dropped (policy_refused), and a later
// initiation from the client is asked about again.
func TestFailedPolicy(t *testing.T) {
	var asked sync.WaitGroup
	asked.Add(2)
	panicky := func() *actor.Props {
		return actor.PropsFromFunc(func(ctx actor.Context) {
			if _, ok := ctx.Message().(*messages.AdmitSession); ok {
				asked.Done()
				panic("policy failed on purpose")
			}
		})
	}
	x := start(t, panicky)
	// A refusal has no event: its drop counter is what there is to wait for.
	refused := func(n uint64) {
		t.Helper()
		deadline := time.Now().Add(waitTimeout)
		for x.counters.Dropped(stats.PolicyRefused) != n {
			if time.Now().After(deadline) {
				t.Fatalf("policy_refused = %d, want %d", x.counters.Dropped(stats.PolicyRefused), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	x.initiate(idA)
	refused(1)
	x.initiate(idA)
	bothAsked := make(chan struct{})
	go func() { asked.Wait(); close(bothAsked) }()
	select {
	case <-bothAsked:
	case <-time.After(waitTimeout):
		t.Fatal("the second initiation was not asked about")
	}
	refused(2)
	if n := x.counters.Dropped(stats.AdmissionPending); n != 0 {
		t.Errorf("admission_pending = %d: the failed admission was not forgotten", n)
	}
	if x.counters.Events(stats.SessionOpened) != 0 {
		t.Error("a session opened")
	}
}

// tracked is a policy that admits everyone, staying with the session if
// stay, and reports its actors' lives and its admissions' releases.
type tracked struct {
	stay                    bool
	live, released, started atomic.Int32
}

func (p *tracked) factory() *actor.Props {
	return actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *actor.Started:
			p.live.Add(1)
		case *actor.Stopped:
			p.live.Add(-1)
		case *messages.AdmitSession:
			ctx.Respond(&messages.SessionAdmitted{Client: m.Client, Stay: p.stay, Release: func() { p.released.Add(1) }})
		case *messages.SessionStarted:
			p.started.Add(1)
		}
	})
}

// waitFor waits until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited in vain for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPolicyLifetime: a policy actor lives as long as it has something to
// do. One that does not stay is stopped once it has answered; one that
// stays is told SessionStarted and stopped when the session ends. Either
// way the answer's Release is called once, when the session ends, or at
// once if no session opens.
func TestPolicyLifetime(t *testing.T) {
	for _, stay := range []bool{false, true} {
		t.Run(fmt.Sprintf("stay=%v", stay), func(t *testing.T) {
			p := &tracked{stay: stay}
			x := start(t, p.factory)
			opened := make(chan messages.SessionInfo, 1)
			sub := x.sys.EventStream.Subscribe(func(evt any) {
				if e, ok := evt.(*messages.SessionOpened); ok {
					opened <- e.SessionInfo
				}
			})
			defer x.sys.EventStream.Unsubscribe(sub)
			x.initiate(idA)
			waitFor(t, "the session to open", func() bool { return x.counters.Events(stats.SessionOpened) == 1 })
			if stay {
				waitFor(t, "SessionStarted", func() bool { return p.started.Load() == 1 })
				if p.live.Load() != 1 {
					t.Fatalf("%d policy actors live while the session is, want 1", p.live.Load())
				}
			} else {
				waitFor(t, "the policy actor to stop", func() bool { return p.live.Load() == 0 })
				if p.started.Load() != 0 {
					t.Fatal("a policy that did not stay was told SessionStarted")
				}
			}
			if p.released.Load() != 0 {
				t.Fatal("released while the session lives")
			}
			x.sys.Root.Send(x.pid, &messages.SessionIdle{Session: <-opened, Side: "client"})
			waitFor(t, "the session to expire", func() bool { return x.counters.Events(stats.SessionExpired) == 1 })
			waitFor(t, "the release", func() bool { return p.released.Load() == 1 })
			waitFor(t, "the policy actor to stop", func() bool { return p.live.Load() == 0 })
			x.stop(t)
			if p.released.Load() != 1 {
				t.Fatalf("released %d times, want once", p.released.Load())
			}
		})
	}
	t.Run("no socket", func(t *testing.T) {
		p := &tracked{stay: true}
		// An address of no interface here: binding fails.
		x := startWith(t, p.factory, func(c *supervisor.Config) { c.UpstreamBind = netip.MustParseAddrPort("192.0.2.1:0") })
		x.initiate(idA)
		waitFor(t, "upstream_bind_failed", func() bool { return x.counters.Dropped(stats.UpstreamBindFailed) == 1 })
		waitFor(t, "the release", func() bool { return p.released.Load() == 1 })
		waitFor(t, "the policy actor to stop", func() bool { return p.live.Load() == 0 })
	})
}

// TestFailedChainMember: a member of a chain that panics fails the chain,
// and the admission is dropped as policy_refused, giving back what the
// members before it hold.
func TestFailedChainMember(t *testing.T) {
	panicky := func() *actor.Props {
		return actor.PropsFromFunc(func(ctx actor.Context) {
			if _, ok := ctx.Message().(*messages.AdmitSession); ok {
				panic("policy failed on purpose")
			}
		})
	}
	p := &tracked{}
	x := start(t, policy.Chain(p.factory, panicky))
	x.initiate(idA)
	waitFor(t, "policy_refused", func() bool { return x.counters.Dropped(stats.PolicyRefused) == 1 })
	waitFor(t, "the release", func() bool { return p.released.Load() == 1 })
	if x.counters.Events(stats.SessionOpened) != 0 {
		t.Error("a session opened")
	}
}
