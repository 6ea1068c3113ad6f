package mailbox_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/mailbox"
	"github.com/udpfwd/udpfwd/internal/racecheck"
)

// heavy is a droppable message of weight w; control is one of weight zero.
type heavy struct{ n, w int }
type control struct{ n int }

func weigh(m any) int {
	if h, ok := m.(*heavy); ok {
		return h.w
	}
	return 0
}

// A bounded mailbox holds droppable messages up to its capacity and hands
// the rest to Drop, on the sender's goroutine; messages of weight zero are
// always queued; what was queued is processed in order; and the queued
// weight goes back to zero.
func TestBoundedDropsWhatDoesNotFit(t *testing.T) {
	const capacity = 100
	system := actor.NewActorSystem()
	defer system.Shutdown()
	busy, release := make(chan struct{}), make(chan struct{})
	var (
		mu      sync.Mutex
		got     []int
		dropped []int
		box     *mailbox.Mailbox
	)
	done := make(chan struct{})
	producer := mailbox.Bounded(mailbox.Bound{
		Capacity: capacity,
		Weigh:    weigh,
		Drop: func(m any) {
			mu.Lock()
			dropped = append(dropped, m.(*heavy).n)
			mu.Unlock()
		},
	})
	pid := system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *heavy:
			if m.n == 0 {
				close(busy)
				<-release // hold the actor busy while the others queue
			}
			mu.Lock()
			got = append(got, m.n)
			mu.Unlock()
		case *control:
			mu.Lock()
			got = append(got, -m.n)
			mu.Unlock()
			if m.n == 99 {
				close(done)
			}
		}
	}, actor.WithMailbox(func() actor.Mailbox {
		mb := producer()
		box = mb.(*mailbox.Mailbox)
		return mb
	}), actor.WithDispatcher(mailbox.Inline())))
	defer system.Root.Stop(pid)

	// The first message runs inline in a goroutine of its own and blocks
	// there, holding the mailbox; everything after it queues.
	go system.Root.Send(pid, &heavy{n: 0, w: 30})
	select {
	case <-busy:
	case <-time.After(5 * time.Second):
		t.Fatal("the first message was not taken")
	}
	for i := 1; i <= 5; i++ {
		system.Root.Send(pid, &heavy{n: i, w: 30}) // 3 fit in 100: 1, 2, 3
		system.Root.Send(pid, &control{n: i})      // always queued
	}
	if q := box.Queued(); q != 90 {
		t.Errorf("queued weight %d, want 90", q)
	}
	system.Root.Send(pid, &heavy{n: 6, w: 10}) // fits exactly
	system.Root.Send(pid, &heavy{n: 7, w: 1})  // does not
	system.Root.Send(pid, &control{n: 99})
	close(release)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the queued messages were not processed")
	}
	mu.Lock()
	defer mu.Unlock()
	want := []int{0, 1, -1, 2, -2, 3, -3, -4, -5, 6, -99}
	if !equal(got, want) {
		t.Errorf("processed %v, want %v", got, want)
	}
	if !equal(dropped, []int{4, 5, 7}) {
		t.Errorf("dropped %v, want [4 5 7]", dropped)
	}
	if q := box.Queued(); q != 0 {
		t.Errorf("queued weight %d after draining, want 0", q)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Many senders at once never take the queue over its capacity: every
// message is either processed or dropped, exactly once.
func TestBoundedConcurrentSenders(t *testing.T) {
	const capacity, senders, each = 64, 4, 5000
	system := actor.NewActorSystem()
	defer system.Shutdown()
	var processed, dropped, over atomic.Int64
	var box *mailbox.Mailbox
	producer := mailbox.Bounded(mailbox.Bound{Capacity: capacity, Weigh: weigh, Drop: func(any) { dropped.Add(1) }})
	pid := system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*heavy); ok {
			if box.Queued() > capacity {
				over.Add(1)
			}
			processed.Add(1)
		}
	}, actor.WithMailbox(func() actor.Mailbox {
		mb := producer()
		box = mb.(*mailbox.Mailbox)
		return mb
	}), actor.WithDispatcher(mailbox.Inline())))
	defer system.Root.Stop(pid)
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			for i := range each {
				system.Root.Send(pid, &heavy{n: i, w: 1})
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for processed.Load()+dropped.Load() < senders*each {
		if time.Now().After(deadline) {
			t.Fatalf("%d processed and %d dropped of %d", processed.Load(), dropped.Load(), senders*each)
		}
		time.Sleep(time.Millisecond)
	}
	if n := processed.Load() + dropped.Load(); n != senders*each {
		t.Fatalf("%d processed and %d dropped of %d", processed.Load(), dropped.Load(), senders*each)
	}
	if over.Load() != 0 {
		t.Fatalf("the queue held more than its capacity %d times", over.Load())
	}
}

// Sending to an idle bounded actor allocates nothing, as to an unbounded one.
func TestBoundedSendAllocs(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("allocation counts differ under -race; the README's test command runs this without -race")
	}
	system := actor.NewActorSystem()
	defer system.Shutdown()
	done := make(chan struct{}, 1)
	pid := system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*heavy); ok {
			done <- struct{}{}
		}
	}, actor.WithMailbox(mailbox.Bounded(mailbox.Bound{Capacity: 10, Weigh: weigh, Drop: func(any) {}}))))
	defer system.Root.Stop(pid)
	m := &heavy{w: 1}
	for range 100 {
		system.Root.Send(pid, m)
		<-done
	}
	if allocs := testing.AllocsPerRun(1000, func() {
		system.Root.Send(pid, m)
		<-done
	}); allocs != 0 {
		t.Fatalf("a send to an idle bounded actor allocates %v times, want 0", allocs)
	}
}
