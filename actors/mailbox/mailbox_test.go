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

// waitTimeout bounds every wait for something that should happen. It only
// costs time when a test fails, so it is generous: a -race run on two busy
// cores can be slow by seconds.
const waitTimeout = 30 * time.Second

type msg struct{ n int }

// recorder is an actor that records the order of what it receives and
// flushes on empty.
type recorder struct {
	mu      sync.Mutex
	got     []int
	pending int // messages since the last flush
	flushes []int
	inTurn  atomic.Int32
	overlap atomic.Bool
}

func (r *recorder) Receive(ctx actor.Context) {
	if r.inTurn.Add(1) != 1 {
		r.overlap.Store(true)
	}
	defer r.inTurn.Add(-1)
	if m, ok := ctx.Message().(*msg); ok {
		r.mu.Lock()
		r.got = append(r.got, m.n)
		r.pending++
		r.mu.Unlock()
	}
}

func (r *recorder) flush() {
	if r.inTurn.Add(1) != 1 {
		r.overlap.Store(true)
	}
	defer r.inTurn.Add(-1)
	r.mu.Lock()
	if r.pending > 0 {
		r.flushes = append(r.flushes, r.pending)
		r.pending = 0
	}
	r.mu.Unlock()
}

func TestOrderAndOnEmpty(t *testing.T) {
	system := actor.NewActorSystem()
	r := &recorder{}
	pid := system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return r },
		actor.WithMailbox(mailbox.Unbounded(mailbox.OnEmpty(r.flush)))))
	const n = 10000
	var wg sync.WaitGroup
	for p := 0; p < 4; p++ { // four concurrent senders, each in order
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i := 0; i < n; i++ {
				system.Root.Send(pid, &msg{p*n + i})
			}
		}(p)
	}
	wg.Wait()
	// Once the mailbox runs dry, every message has been flushed.
	deadline := time.Now().Add(waitTimeout)
	for {
		r.mu.Lock()
		flushed := 0
		for _, f := range r.flushes {
			flushed += f
		}
		r.mu.Unlock()
		if flushed == 4*n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the flushes cover %d of %d messages", waitTimeout, flushed, 4*n)
		}
		time.Sleep(time.Millisecond)
	}
	if err := system.Root.PoisonFuture(pid).Wait(); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) != 4*n {
		t.Fatalf("received %d, want %d", len(r.got), 4*n)
	}
	last := map[int]int{0: -1, 1: n - 1, 2: 2*n - 1, 3: 3*n - 1}
	for _, v := range r.got {
		p := v / n
		if v <= last[p] {
			t.Fatalf("sender %d's messages out of order: %d after %d", p, v, last[p])
		}
		last[p] = v
	}
	total := 0
	for _, f := range r.flushes {
		total += f
	}
	if total != 4*n || r.pending != 0 {
		t.Fatalf("flushes cover %d messages (%d pending), want %d", total, r.pending, 4*n)
	}
	if r.overlap.Load() {
		t.Fatal("OnEmpty ran concurrently with Receive")
	}
}

func TestPanicEscalatesAndStops(t *testing.T) {
	system := actor.NewActorSystem()
	stopped := make(chan struct{})
	props := actor.PropsFromFunc(func(ctx actor.Context) {
		switch ctx.Message().(type) {
		case *msg:
			panic("boom")
		case *actor.Stopped:
			close(stopped)
		}
	}, actor.WithMailbox(mailbox.Unbounded()))
	parent := system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*actor.Started); ok {
			child := ctx.Spawn(props)
			ctx.Send(child, &msg{})
		}
	}, actor.WithSupervisor(actor.NewOneForOneStrategy(0, time.Second, func(any) actor.Directive { return actor.StopDirective }))))
	defer system.Root.Stop(parent)
	select {
	case <-stopped:
	case <-time.After(waitTimeout):
		t.Fatal("the failed actor was not stopped by its supervisor")
	}
}

func TestSendAllocs(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("allocation counts differ under -race; the README's test command runs this without -race")
	}
	system := actor.NewActorSystem()
	done := make(chan struct{}, 1)
	pid := system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*msg); ok {
			done <- struct{}{}
		}
	}, actor.WithMailbox(mailbox.Unbounded())))
	defer system.Root.Stop(pid)
	m := &msg{}
	for range 100 { // warm up
		system.Root.Send(pid, m)
		<-done
	}
	allocs := testing.AllocsPerRun(1000, func() {
		system.Root.Send(pid, m)
		<-done
	})
	if allocs != 0 {
		t.Fatalf("a send to an idle actor allocates %v times, want 0", allocs)
	}
}

// TestOnEmptyWhenCountLags forces the interleaving in which a flush was
// once lost: a sender has queued its message but not yet counted it when
// the processing goroutine takes, handles and runs dry on it, and the
// sender counts it just before that goroutine goes idle. The message must
// still be flushed: the writer and the sessions hold datagrams until
// OnEmpty, and a ping-pong client sends nothing more until it gets its
// reply.
func TestOnEmptyWhenCountLags(t *testing.T) {
	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(waitTimeout):
			t.Fatalf("timed out waiting for %s", what)
		}
	}
	var pending atomic.Int64
	inHandler, hold := make(chan struct{}), make(chan struct{})
	pushed, releaseSender := make(chan struct{}), make(chan struct{})
	atIdle, releaseProcessor := make(chan struct{}), make(chan struct{})
	var armSender, armProcessor atomic.Bool
	hooks := mailbox.WithTestHooks(func() {
		if armSender.CompareAndSwap(true, false) {
			close(pushed)
			<-releaseSender
		}
	}, func() {
		if armProcessor.CompareAndSwap(true, false) {
			close(atIdle)
			<-releaseProcessor
		}
	})

	system := actor.NewActorSystem()
	pid := system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*msg); ok {
			pending.Add(1)
			if m.n == 1 {
				close(inHandler)
				<-hold
			}
		}
	}, actor.WithMailbox(mailbox.Unbounded(mailbox.OnEmpty(func() { pending.Store(0) }), hooks)), actor.WithDispatcher(mailbox.Inline())))
	defer system.Root.Stop(pid)

	processorDone, senderDone := make(chan struct{}), make(chan struct{})
	go func() { // the processing goroutine: message 1 runs inline in it
		defer close(processorDone)
		system.Root.Send(pid, &msg{n: 1})
	}()
	wait(inHandler, "message 1 to be handled")
	armSender.Store(true)
	go func() { // the sender: queues message 2, pauses before counting it
		defer close(senderDone)
		system.Root.Send(pid, &msg{n: 2})
	}()
	wait(pushed, "message 2 to be queued")
	armProcessor.Store(true)
	close(hold) // the processor handles message 2 and runs dry
	wait(atIdle, "the processor to run dry")
	close(releaseSender) // the sender counts message 2; the mailbox is still running
	wait(senderDone, "the sender to return")
	close(releaseProcessor)
	wait(processorDone, "the processor to go idle")
	if n := pending.Load(); n != 0 {
		t.Fatalf("%d message(s) handled but never flushed", n)
	}
}

// TestOnEmptyAfterEveryBurst checks that the last message of a burst is
// flushed without another message arriving to trigger it: the writer and
// the sessions coalesce datagrams until OnEmpty, so a flush that waits for
// the next message holds a reply until the client's next datagram (seen as
// a ping-pong datagram lost after 1 s). Each round two goroutines post one
// message each to an inline actor at the same moment, then the test waits
// for both to be flushed.
func TestOnEmptyAfterEveryBurst(t *testing.T) {
	system := actor.NewActorSystem()
	var pending, flushed atomic.Int64
	flushedCh := make(chan struct{}, 1)
	flush := func() {
		if n := pending.Swap(0); n > 0 {
			flushed.Add(n)
			select {
			case flushedCh <- struct{}{}:
			default:
			}
		}
	}
	pid := system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*msg); ok {
			pending.Add(1)
		}
	}, actor.WithMailbox(mailbox.Unbounded(mailbox.OnEmpty(flush))), actor.WithDispatcher(mailbox.Inline())))
	defer system.Root.Stop(pid)

	rounds := 20000
	if racecheck.Enabled {
		rounds = 3000
	}
	m := &msg{}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for round := 1; round <= rounds; round++ {
		start = make(chan struct{})
		for range 2 {
			wg.Add(1)
			go func(start chan struct{}) {
				defer wg.Done()
				<-start
				system.Root.Send(pid, m)
			}(start)
		}
		close(start)
		wg.Wait()
		want := int64(2 * round)
		deadline := time.After(waitTimeout)
		for flushed.Load() < want {
			select {
			case <-flushedCh:
			case <-deadline:
				t.Fatalf("round %d: %d of %d messages flushed; the rest wait for a message that never comes", round, flushed.Load(), want)
			}
		}
	}
}
