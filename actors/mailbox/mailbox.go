// Package mailbox is the relay's actor mailbox: protoactor's default
// unbounded mailbox, rebuilt so that a message allocates nothing.
//
// protoactor's default mailbox schedules its processing with
// dispatcher.Schedule(m.processMessages); the method value escapes and is
// allocated every time an idle mailbox wakes up — once per batch on every
// hop of the datagram path. This mailbox binds that function once. It also
// lets an actor act when its mailbox runs dry (OnEmpty), still inside the
// actor's turn, which is how the writer coalesces replies from many
// sessions into one sendmmsg.
//
// Semantics are those of protoactor's default mailbox: system messages
// first, user messages in order, suspension on failure, panics escalated to
// the supervisor. MessageBatch unwrapping is not supported (the relay does
// not use it).
//
// A mailbox can be bounded (Bounded): it then holds at most a given weight
// of the user messages that may be dropped (the relay weighs a batch of
// datagrams by the memory it holds), and hands any such message that does
// not fit to a drop function, on the sender's goroutine, instead of
// queueing it. Messages that must never be dropped (weight zero: an
// admission's answer, an idle check) and system messages are always queued;
// their number is bounded by whoever sends them, not here.
package mailbox

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
)

const (
	idle int32 = iota
	running
)

// inlineThroughput is how many messages an inline actor processes before it
// yields the processor, like protoactor's default dispatcher.
const inlineThroughput = 300

// Inline returns a dispatcher that processes an idle actor's mailbox in the
// goroutine that sends to it, instead of waking another goroutine: the
// supervisor then routes in the listener's goroutine, and the writer writes
// in the session's. An actor whose mailbox is already being processed just
// queues the message, so it still handles one message at a time, in order.
// Use it only for actors that never wait for a goroutine that may be the
// one sending to them. actors/relay's package doc lists which goroutines
// the relay's inline actors run on.
func Inline() actor.Dispatcher { return actor.NewSynchronizedDispatcher(inlineThroughput) }

// Option configures a mailbox.
type Option func(*Mailbox)

// OnEmpty makes the mailbox call f each time it has processed every queued
// user message, before it goes idle, in the actor's own goroutine and turn:
// f may use the actor's state. A message posted meanwhile is processed
// after f returns.
func OnEmpty(f func()) Option { return func(m *Mailbox) { m.onEmpty = f } }

// Unbounded returns a producer of unbounded, allocation-free mailboxes.
func Unbounded(opts ...Option) actor.MailboxProducer { return Bounded(Bound{}, opts...) }

// Bound limits what a mailbox queues. The zero Bound limits nothing.
type Bound struct {
	// Capacity is the most weight of queued user messages (as Weigh
	// weighs them) the mailbox holds; zero means no limit.
	Capacity int
	// Weigh returns a user message's weight: for the relay's batches, the
	// bytes they hold. A message of weight zero is never dropped and does
	// not count. Weigh must be safe for concurrent use.
	Weigh func(message any) int
	// Drop disposes of a message of positive weight that did not fit: it
	// must count it and release what it holds. It runs on the sender's
	// goroutine, and must be safe for concurrent use and never send to
	// the mailbox's own actor.
	Drop func(message any)
	// Backlog, if set, shows the weight queued now to code outside the
	// actor: a sender that would rather wait (and let its socket's buffer
	// hold the datagrams) than fill the queue with small batches.
	Backlog *Backlog
}

// Backlog is the weight of a bounded mailbox's queued messages, readable
// from any goroutine. Its zero value reads zero until a mailbox uses it.
type Backlog struct{ v atomic.Int64 }

// Load returns the weight queued now.
func (b *Backlog) Load() int {
	if b == nil {
		return 0
	}
	return int(b.v.Load())
}

// Bounded returns a producer of allocation-free mailboxes that hold at most
// b.Capacity weight of droppable user messages (see Bound). The limit is
// exact: the check and the queueing happen under one lock.
func Bounded(b Bound, opts ...Option) actor.MailboxProducer {
	if b.Capacity > 0 && (b.Weigh == nil || b.Drop == nil) {
		panic("mailbox: a bounded mailbox needs Weigh and Drop")
	}
	return func() actor.Mailbox {
		m := &Mailbox{bound: b}
		m.user.backlog = b.Backlog
		m.system.shrink = true
		for _, o := range opts {
			o(m)
		}
		m.process = m.processMessages
		return m
	}
}

// Mailbox implements actor.Mailbox.
type Mailbox struct {
	user, system queue
	userMessages atomic.Int32
	sysMessages  atomic.Int32
	status       atomic.Int32
	suspended    atomic.Bool
	invoker      actor.MessageInvoker
	dispatcher   actor.Dispatcher
	process      func() // m.processMessages, bound once
	onEmpty      func()
	bound        Bound

	// Test hooks (nil outside tests) that pause a sender between queueing
	// and counting its message, and the processing goroutine just before
	// it goes idle: the interleaving in which a flush was once lost.
	testAfterPush, testBeforeIdle func()
}

// PostUserMessage queues a user message, or hands it to the bound's Drop
// if it does not fit (see Bound).
func (m *Mailbox) PostUserMessage(message any) {
	w := 0
	if m.bound.Capacity > 0 {
		w = m.bound.Weigh(message)
	}
	if !m.user.pushWithin(message, w, m.bound.Capacity) {
		m.bound.Drop(message)
		return
	}
	if m.testAfterPush != nil {
		m.testAfterPush()
	}
	m.userMessages.Add(1)
	m.schedule()
}

// PostSystemMessage queues a system message. System messages are never
// dropped.
func (m *Mailbox) PostSystemMessage(message any) {
	m.system.pushWithin(message, 0, 0)
	m.sysMessages.Add(1)
	m.schedule()
}

// RegisterHandlers is called by protoactor when the actor is spawned.
func (m *Mailbox) RegisterHandlers(invoker actor.MessageInvoker, dispatcher actor.Dispatcher) {
	m.invoker = invoker
	m.dispatcher = dispatcher
}

// Start is called by protoactor when the actor is spawned.
func (m *Mailbox) Start() {}

// UserMessageCount returns the number of queued user messages.
func (m *Mailbox) UserMessageCount() int { return int(m.userMessages.Load()) }

// Queued returns the weight of the droppable user messages queued now.
func (m *Mailbox) Queued() int {
	m.user.mu.Lock()
	defer m.user.mu.Unlock()
	return m.user.weight
}

func (m *Mailbox) schedule() {
	if m.status.CompareAndSwap(idle, running) {
		m.dispatcher.Schedule(m.process)
	}
}

func (m *Mailbox) processMessages() {
	for {
		// OnEmpty runs whenever the queue was found empty, whatever the
		// counter says: a sender pushes before it counts, so the counter can
		// be below zero for a moment after its message was processed.
		// Skipping the flush then would hold that message's datagrams until
		// the next message, which for a ping-pong client never comes.
		if m.run() && m.onEmpty != nil {
			m.safeOnEmpty()
		}
		if m.testBeforeIdle != nil {
			m.testBeforeIdle()
		}
		m.status.Store(idle)
		sys, user := m.sysMessages.Load(), m.userMessages.Load()
		// Messages posted after the loop ended would otherwise wait.
		if sys == 0 && (m.suspended.Load() || user == 0) {
			return
		}
		if !m.status.CompareAndSwap(idle, running) {
			return // another goroutine took over
		}
	}
}

func (m *Mailbox) safeOnEmpty() {
	defer func() {
		if r := recover(); r != nil {
			m.invoker.EscalateFailure(r, nil)
		}
	}()
	m.onEmpty()
}

// run processes queued messages and reports whether it stopped because the
// user queue was empty (not because the mailbox is suspended or a message
// panicked).
func (m *Mailbox) run() (drained bool) {
	var msg any
	defer func() {
		if r := recover(); r != nil {
			m.invoker.EscalateFailure(r, msg)
		}
	}()
	i, t := 0, m.dispatcher.Throughput()
	for {
		if i > t {
			i = 0
			runtime.Gosched()
		}
		i++
		if msg = m.system.pop(); msg != nil {
			m.sysMessages.Add(-1)
			switch msg.(type) {
			case *actor.SuspendMailbox:
				m.suspended.Store(true)
			case *actor.ResumeMailbox:
				m.suspended.Store(false)
			default:
				m.invoker.InvokeSystemMessage(msg)
			}
			continue
		}
		if m.suspended.Load() {
			return false
		}
		if msg = m.user.pop(); msg == nil {
			return true
		}
		m.userMessages.Add(-1)
		m.invoker.InvokeUserMessage(msg)
	}
}

// queue is a FIFO ring that grows and never shrinks: after warm-up a push
// allocates nothing. It keeps each entry's weight, and their sum. It starts
// small (minQueue entries), since most of the relay's actors are idle
// sessions whose queues rarely hold more than one message. A queue marked
// shrink (the system messages', which come a few in an actor's life) lets
// its ring go whenever it empties.
type queue struct {
	mu      sync.Mutex
	buf     []entry
	head    int
	n       int
	weight  int
	backlog *Backlog // mirrors weight, if set
	shrink  bool
}

// minQueue is the size of a queue's first ring.
const minQueue = 4

type entry struct {
	v any
	w int
}

// pushWithin queues v of weight w unless that would take the queue's weight
// over capacity (zero: no limit); it reports whether it queued v. Weight
// zero always fits.
func (q *queue) pushWithin(v any, w, capacity int) bool {
	q.mu.Lock()
	if w > 0 && capacity > 0 && q.weight+w > capacity {
		q.mu.Unlock()
		return false
	}
	if q.n == len(q.buf) {
		grown := make([]entry, max(minQueue, 2*len(q.buf)))
		for i := 0; i < q.n; i++ {
			grown[i] = q.buf[(q.head+i)%len(q.buf)]
		}
		q.buf, q.head = grown, 0
	}
	q.buf[(q.head+q.n)%len(q.buf)] = entry{v, w}
	q.n++
	q.weight += w
	if q.backlog != nil && w != 0 {
		q.backlog.v.Store(int64(q.weight))
	}
	q.mu.Unlock()
	return true
}

func (q *queue) pop() any {
	q.mu.Lock()
	if q.n == 0 {
		q.mu.Unlock()
		return nil
	}
	e := q.buf[q.head]
	q.buf[q.head] = entry{}
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	if q.n == 0 && q.shrink {
		q.buf, q.head = nil, 0
	}
	q.weight -= e.w
	if q.backlog != nil && e.w != 0 {
		q.backlog.v.Store(int64(q.weight))
	}
	q.mu.Unlock()
	return e.v
}
