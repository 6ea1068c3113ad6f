package cluster

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// events records the membership events a node publishes.
type events struct {
	mu     sync.Mutex
	joined []MemberJoined
	left   []MemberLeft
}

func recordEvents(n *testNode) *events {
	e := &events{}
	n.system.EventStream.Subscribe(func(evt any) {
		e.mu.Lock()
		defer e.mu.Unlock()
		switch m := evt.(type) {
		case *MemberJoined:
			e.joined = append(e.joined, *m)
		case *MemberLeft:
			e.left = append(e.left, *m)
		}
	})
	return e
}

func (e *events) leftOf(addr netip.AddrPort) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, m := range e.left {
		if m.Address == addr {
			n++
		}
	}
	return n
}

// failPolls makes n's polls of the node at bind fail while fail says so;
// it returns how many polls of it were made since.
func failPolls(n *testNode, bind netip.AddrPort, fail func(poll int64) bool) *atomic.Int64 {
	var polls atomic.Int64
	h := healthAddr(bind)
	f := func(peer netip.AddrPort) bool {
		if peer != h {
			return false
		}
		return fail(polls.Add(1))
	}
	n.static.failPoll.Store(&f)
	return &polls
}

// waitFor waits, on membership events and polls, until cond holds.
func waitFor(t *testing.T, n *testNode, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(eventTimeout)
	for !cond() {
		select {
		case <-n.changed:
		case <-time.After(staticPollInterval): // a poll, not a membership event
		case <-deadline:
			t.Fatalf("%s: %s did not happen", n.Address(), what)
		}
	}
}

// TestStaticToleratesMissedPolls: polls of a peer that fail fewer than
// staticMissLimit times in a row leave it a member (protoactor's
// automanaged provider dropped, and so blocked for good, a peer after one);
// a peer whose health port refuses connections is dropped at once.
func TestStaticToleratesMissedPolls(t *testing.T) {
	binds := []netip.AddrPort{freeBind(t), freeBind(t), freeBind(t)}
	abc := startNodes(t, staticConfigs("miss", binds...)...)
	a, c := abc[0], abc[2]
	waitMembers(t, abc, abc...)
	evA := recordEvents(a)
	polls := failPolls(a, binds[2], func(poll int64) bool { return poll < staticMissLimit })
	waitFor(t, a, "a poll after the missed ones", func() bool { return polls.Load() > staticMissLimit })
	if n := evA.leftOf(binds[2]); n != 0 {
		t.Fatalf("A saw C leave %d times after %d missed polls, want it kept", n, staticMissLimit-1)
	}
	waitMembers(t, abc, abc...)

	closeNodes(c)
	polls.Store(-1 << 40) // never fail again
	waitMembers(t, abc[:2], abc[:2]...)
	if c.Stats().Rejoins != 0 {
		t.Fatalf("C rejoined %d times, want 0", c.Stats().Rejoins)
	}
}

// TestStaticRejoinAfterPartition: a node that its peers dropped (health
// polls failed longer than they tolerate, so protoactor blocks its member
// ID) notices that they leave it out, rejoins with a new member ID, and
// its sessions are found again.
func TestStaticRejoinAfterPartition(t *testing.T) {
	binds := []netip.AddrPort{freeBind(t), freeBind(t), freeBind(t)}
	abc := startNodes(t, staticConfigs("rejoin", binds...)...)
	a, c := abc[0], abc[2]
	waitMembers(t, abc, abc...)
	session, _ := spawnSink(c, 1)
	key := clientID(7)
	if _, err := c.Register(key, session); err != nil {
		t.Fatal(err)
	}
	if got := a.Lookup(key); !samePID(got, session) {
		t.Fatalf("A finds %v, want C's %v", got, session)
	}
	evA := recordEvents(a)

	var partitioned atomic.Bool
	partitioned.Store(true)
	failPolls(a, binds[2], func(int64) bool { return partitioned.Load() })
	waitFor(t, a, "C dropped", func() bool { return evA.leftOf(binds[2]) > 0 })
	if got := a.Lookup(key); got != nil {
		t.Fatalf("A finds %v on a node it dropped, want nil", got)
	}
	waitFor(t, c, "C unhealthy while A leaves it out", func() bool { return c.Health() != nil })
	partitioned.Store(false)

	waitFor(t, c, "C rejoined", func() bool { return c.Stats().Rejoins > 0 })
	waitMembers(t, abc, abc...)
	waitFor(t, a, "C's session found again", func() bool { return samePID(a.Lookup(key), session) })
	waitFor(t, c, "C healthy again", func() bool { return c.Health() == nil })
	if n := c.Stats().Rejoins; n != 1 {
		t.Fatalf("C rejoined %d times, want 1", n)
	}
}
