package cluster

import (
	"sync"

	"github.com/asynkron/protoactor-go/actor"
)

// Register and Lookup wait for a remote request (about 200 µs, up to
// requestTimeout when a directory's node died unnoticed). An actor on the
// datagram path (a supervisor runs inline on a listener's goroutine) must
// not wait for them: it asks with RegisterAsync and LookupAsync, and the
// answer arrives later as a message to an actor of its choosing.

// asyncWorkers bounds the goroutines that run asynchronous requests: a
// burst of registrations (sessions restored at start) or lookups waits in
// the queue instead of starting a goroutine each.
const asyncWorkers = 16

// Located answers LookupAsync: the session of Key, or nil if no node has
// one.
type Located struct {
	Key Key
	PID *actor.PID
}

// Registered answers RegisterAsync: the session the directory holds for Key
// afterwards (Winner), which is PID unless another node's session was
// registered first, and Err if the directory could not be asked (the
// session is kept and registered again after the next topology change).
type Registered struct {
	Key         Key
	PID, Winner *actor.PID
	Err         error
}

// LookupAsync looks key up as Lookup does, on a goroutine of the node's,
// and sends the answer to reply as *Located. It does not block.
func (n *Node) LookupAsync(key Key, reply *actor.PID) {
	n.async.run(func() {
		n.system.Root.Send(reply, &Located{Key: key, PID: n.Lookup(key)})
	})
}

// RegisterAsync registers pid for key as Register does, on a goroutine of
// the node's, and sends the answer to reply as *Registered. It does not
// block.
func (n *Node) RegisterAsync(key Key, pid, reply *actor.PID) {
	n.async.run(func() {
		winner, err := n.Register(key, pid)
		n.system.Root.Send(reply, &Registered{Key: key, PID: pid, Winner: winner, Err: err})
	})
}

// asyncQueue runs functions on at most asyncWorkers goroutines, started
// when work arrives and ended when the queue is empty. After close, run
// drops what it is given.
type asyncQueue struct {
	mu      sync.Mutex
	queue   []func()
	workers int
	closed  bool
}

func (q *asyncQueue) run(f func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.queue = append(q.queue, f)
	if q.workers < asyncWorkers {
		q.workers++
		go q.work()
	}
}

func (q *asyncQueue) work() {
	for {
		q.mu.Lock()
		if len(q.queue) == 0 || q.closed {
			q.workers--
			q.mu.Unlock()
			return
		}
		f := q.queue[0]
		q.queue[0] = nil
		q.queue = q.queue[1:]
		q.mu.Unlock()
		f()
	}
}

// close drops what is queued; requests under way finish.
func (q *asyncQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.queue = nil
	q.mu.Unlock()
}
