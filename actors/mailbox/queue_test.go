package mailbox

import "testing"

// An idle actor's queues hold little: the user queue starts with a small
// ring that grows as needed and keeps it, the system queue lets its ring
// go whenever it empties.
func TestQueueRings(t *testing.T) {
	m := Unbounded()().(*Mailbox)
	for i := range 3 * minQueue {
		m.user.pushWithin(i, 0, 0)
	}
	for i := range 3 * minQueue {
		if v := m.user.pop(); v != i {
			t.Fatalf("popped %v, want %d: the ring lost its order growing", v, i)
		}
	}
	if len(m.user.buf) < 3*minQueue {
		t.Fatalf("the user queue's ring shrank to %d", len(m.user.buf))
	}
	m.system.pushWithin("started", 0, 0)
	if len(m.system.buf) != minQueue {
		t.Fatalf("the system queue's first ring has %d entries, want %d", len(m.system.buf), minQueue)
	}
	if v := m.system.pop(); v != "started" || m.system.buf != nil {
		t.Fatalf("popped %v; the emptied system queue kept a ring of %d", v, len(m.system.buf))
	}
}
