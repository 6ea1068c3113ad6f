package pool

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func all(int) bool { return true }

// at is the clock of these tests: t0 plus s seconds.
func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func pick(t *testing.T, p *Pool, now time.Time) int {
	t.Helper()
	i, ok := p.Pick(now, all)
	if !ok {
		t.Fatal("Pick found no endpoint")
	}
	return i
}

// Without samples, new sessions go to the first endpoint configured; with
// samples, to the fastest; a single slow sample moves the estimate by an
// eighth.
func TestPickByRoundTrip(t *testing.T) {
	p := New(Config{FailAfter: 2}, "a", "b", "c")
	if i := pick(t, p, t0); i != 0 {
		t.Fatalf("no samples: picked %d, want the first", i)
	}
	p.Answered(1, 40*time.Millisecond, t0)
	if i := pick(t, p, t0); i != 1 {
		t.Fatalf("b has a sample, a none: picked %d, want b", i)
	}
	p.Answered(2, 20*time.Millisecond, t0)
	if i := pick(t, p, t0); i != 2 {
		t.Fatalf("c (20ms) against b (40ms): picked %d", i)
	}
	p.Answered(2, 180*time.Millisecond, t0) // 20 + (180-20)/8 = 40ms: a tie, b comes first
	if st := p.Status()[2]; st.RTT != 40*time.Millisecond {
		t.Fatalf("smoothed RTT %v, want 40ms", st.RTT)
	}
	if i := pick(t, p, t0); i != 1 {
		t.Fatalf("a tie: picked %d, want b, configured first", i)
	}
	// A cookie reply proves the endpoint alive without a sample.
	p.Answered(0, 0, t0)
	if st := p.Status()[0]; st.RTT != 0 || st.Answered != 1 {
		t.Fatalf("after a cookie: %+v", st)
	}
	// Endpoints without an address are skipped.
	if i, ok := p.Pick(t0, func(i int) bool { return i == 0 }); !ok || i != 0 {
		t.Fatalf("only a usable: %d, %v", i, ok)
	}
	if _, ok := p.Pick(t0, func(int) bool { return false }); ok {
		t.Fatal("picked an endpoint none of which is usable")
	}
}

// FailAfter unanswered initiations in a row mark an endpoint down, any
// answer in between resets the count; a down endpoint is skipped, tried
// again by one session after the backoff, which doubles when the try
// fails, and is up again with its first answer.
func TestDownBackoffAndUp(t *testing.T) {
	p := New(Config{FailAfter: 2, Backoff: 30 * time.Second, MaxBackoff: 100 * time.Second}, "a", "b")
	p.Answered(0, 10*time.Millisecond, t0)
	p.Answered(1, 50*time.Millisecond, t0)
	if p.Unanswered(0, at(5)) {
		t.Fatal("down after one unanswered initiation")
	}
	p.Answered(0, 10*time.Millisecond, at(6)) // another session's handshake: the count starts again
	if p.Unanswered(0, at(10)) || !p.Unanswered(0, at(15)) {
		t.Fatal("not down after two in a row")
	}
	if !p.Down(0) || p.Status()[0].Up || p.DownFor(0, at(20)) != 5*time.Second || p.RetryIn(0, at(20)) != 25*time.Second {
		t.Fatalf("a: %+v, down for %v, retry in %v", p.Status()[0], p.DownFor(0, at(20)), p.RetryIn(0, at(20)))
	}
	if p.Unanswered(0, at(16)) {
		t.Fatal("marked down twice")
	}
	if i := pick(t, p, at(20)); i != 1 {
		t.Fatalf("a is down: picked %d", i)
	}
	// After the backoff, a (the faster) is tried by the next new session,
	// alone: the one after goes to b.
	if i := pick(t, p, at(45)); i != 0 {
		t.Fatalf("a is due for a try: picked %d", i)
	}
	if i := pick(t, p, at(46)); i != 1 {
		t.Fatalf("a is being tried: picked %d, want b", i)
	}
	// The try fails: down for twice as long.
	p.Unanswered(0, at(55))
	if p.RetryIn(0, at(55)) != 60*time.Second {
		t.Fatalf("retry in %v after a failed try, want 60s", p.RetryIn(0, at(55)))
	}
	if i := pick(t, p, at(114)); i != 1 {
		t.Fatal("a picked before its doubled backoff ran out")
	}
	// Another failed try: the backoff is capped.
	pick(t, p, at(115))
	p.Unanswered(0, at(120))
	if p.RetryIn(0, at(120)) != 100*time.Second {
		t.Fatalf("retry in %v, want the cap 100s", p.RetryIn(0, at(120)))
	}
	// Unanswered initiations of sessions still on it do not extend it.
	p.Unanswered(0, at(125))
	if p.RetryIn(0, at(125)) != 95*time.Second {
		t.Fatalf("retry in %v: a session stuck on the endpoint extended its backoff", p.RetryIn(0, at(125)))
	}
	if !p.Answered(0, 12*time.Millisecond, at(130)) || p.Down(0) || p.DownFor(0, at(130)) != 0 {
		t.Fatal("an answer did not bring a back up")
	}
	if i := pick(t, p, at(131)); i != 0 {
		t.Fatalf("a is up again and fastest: picked %d", i)
	}
	if st := p.Status()[0]; st.Answered != 3 || st.Unanswered != 7 {
		t.Fatalf("counts %+v", st)
	}
}

// A session moves only to another endpoint that is up or due for a try,
// nearest after its own in configured order among those without samples;
// with none, it stays.
func TestNext(t *testing.T) {
	p := New(Config{FailAfter: 1}, "a", "b", "c", "d")
	if i, ok := p.Next(t0, 1, all); !ok || i != 2 {
		t.Fatalf("from b: %d, %v; want c, next in order", i, ok)
	}
	if i, ok := p.Next(t0, 3, all); !ok || i != 0 {
		t.Fatalf("from d: %d, %v; want a, wrapping", i, ok)
	}
	p.Answered(3, 30*time.Millisecond, t0)
	if i, ok := p.Next(t0, 1, all); !ok || i != 3 {
		t.Fatalf("from b with d measured: %d, %v; want d", i, ok)
	}
	for i := range 4 {
		p.Unanswered(i, t0)
	}
	if i, ok := p.Next(at(1), 0, all); ok {
		t.Fatalf("every endpoint down: moved to %d", i)
	}
	if i := pick(t, p, at(1)); i < 0 || i > 3 {
		t.Fatalf("every endpoint down: a new session got %d", i)
	}
	if _, ok := p.Next(at(1), 0, func(i int) bool { return i == 0 }); ok {
		t.Fatal("moved to an endpoint without an address")
	}
}

// A reload keeps the records of the endpoints that stay, at their new
// places; new ones start up.
func TestSetNames(t *testing.T) {
	p := New(Config{FailAfter: 1}, "a", "b")
	p.Unanswered(0, t0)
	p.Answered(1, 5*time.Millisecond, t0)
	p.AddSessions(1, 3)
	p.Moved(0)
	p.SetNames("c", "b", "a")
	st := p.Status()
	if st[0] != (Status{Name: "c", Up: true}) || st[1].Sessions != 3 || st[1].RTT != 5*time.Millisecond || st[2].Up || st[2].Failovers != 1 {
		t.Fatalf("after a reload: %+v", st)
	}
	if p.Index("a") != 2 || p.Index("x") != -1 || p.Name(0) != "c" || p.Len() != 3 {
		t.Fatal("Index, Name or Len wrong after a reload")
	}
	p.SetConfig(Config{FailAfter: 0})
	if !p.Unanswered(0, t0) {
		t.Fatal("FailAfter 0 is taken as 1")
	}
}

// The pool allocates nothing per handshake.
func TestAllocs(t *testing.T) {
	p := New(Config{FailAfter: 2}, "a", "b")
	now := t0
	if n := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Second)
		p.Unanswered(0, now)
		p.Answered(0, time.Millisecond, now)
		p.Pick(now, all)
	}); n != 0 {
		t.Fatalf("%v allocations per handshake", n)
	}
}
