package supervisor

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/racecheck"
	"github.com/udpfwd/udpfwd/internal/replay"
	"github.com/udpfwd/udpfwd/internal/roam"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// plainCtx is the actor context for routing plain clients: it records which
// session each datagram went to, from where, and every admission asked.
type plainCtx struct {
	got  map[string][]netip.AddrPort // by session PID id: the sources of what it was sent
	asks []*messages.AdmitSession
	n    int
}

func newPlainCtx() *plainCtx { return &plainCtx{got: map[string][]netip.AddrPort{}} }

func (c *plainCtx) Send(pid *actor.PID, m any) {
	b := m.(*messages.ClientDatagrams).Batch()
	for _, d := range b.Datagrams {
		c.got[pid.Id] = append(c.got[pid.Id], d.Addr)
	}
	b.Release()
}
func (c *plainCtx) Spawn(*actor.Props) *actor.PID {
	c.n++
	return actor.NewPID("test", fmt.Sprintf("policy-%d", c.n))
}
func (c *plainCtx) Request(_ *actor.PID, m any) { c.asks = append(c.asks, m.(*messages.AdmitSession)) }
func (c *plainCtx) Stop(*actor.PID)             {}

// take returns the sources of what session e was sent since the last take.
func (c *plainCtx) take(e *entry) []netip.AddrPort {
	got := c.got[e.pid.Id]
	delete(c.got, e.pid.Id)
	return got
}

var plainT0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// plainSupervisor is a supervisor that tracks plain clients, on a clock the
// test moves, logging to log (nil: nowhere).
func plainSupervisor(t testing.TB, log *zap.Logger, clients messages.Clients) (*Supervisor, *time.Time) {
	t.Helper()
	if log == nil {
		log = zap.NewNop()
	}
	now := plainT0
	s := newSupervisor(Config{
		Counters: &stats.Counters{}, Logger: log, Upstream: netip.MustParseAddrPort("127.0.0.1:1"), Policy: policy.AllowAll,
		Admission: limits.NewAdmission(limits.AdmissionConfig{}, plainT0),
		Replays:   replay.New(replay.Entries, replay.TTL, plainT0),
		Clients:   clients,
	})
	s.now = func() time.Time { return now }
	s.plain = newPlainTable(plainT0, MaxTrackedIndexes)
	return s, &now
}

// sendFrom routes one datagram from from.
func sendFrom(s *Supervisor, ctx routeContext, from netip.AddrPort, d []byte) {
	b := udpio.GetBatch()
	buf := udpio.GetBuffer()
	copy(buf[:], d)
	b.Add(udpio.Datagram{Buf: buf, N: len(d), Addr: from})
	s.route(ctx, b)
}

// open opens the session of the admission asked by a, as admitted does
// (without the socket and the actor), and returns it.
func open(s *Supervisor, a *messages.AdmitSession) *entry {
	k := answerKey(a.Client, a.Ticket)
	p := s.pending[k]
	delete(s.pending, k)
	udpio.PutBuffer(p.first.Buf)
	e := &entry{key: k, pid: actor.NewPID("test", fmt.Sprintf("session-%d", k)), policy: p.policy,
		info: messages.SessionInfo{Client: a.Client, ClientAddr: a.From}, stats: stats.NewSession(plainT0, plainT0, a.From)}
	s.enter(e)
	return e
}

var zeroID = wgproto.ClientID{}

// A plain client's session is found by its confirmed address (its
// initiations and anything it sends from there) and by the indexes the
// upstream assigned it (from anywhere); nothing else reaches it.
func TestPlainRouting(t *testing.T) {
	s, _ := plainSupervisor(t, nil, messages.Clients{TrackZeroID: true})
	ctx := newPlainCtx()
	k := s.cfg.Counters
	a := netip.MustParseAddrPort("192.0.2.1:1000")
	a2 := netip.MustParseAddrPort("192.0.2.1:1001") // behind the same NAT address
	c := netip.MustParseAddrPort("198.51.100.7:4000")

	sendFrom(s, ctx, a, wgtest.Initiation(zeroID, 1))
	sendFrom(s, ctx, a, wgtest.Initiation(zeroID, 2)) // a retry while the first waits
	sendFrom(s, ctx, a2, wgtest.Initiation(zeroID, 3))
	if len(ctx.asks) != 2 || k.Dropped(stats.AdmissionPending) != 1 {
		t.Fatalf("asked %d admissions, %d pending drops; want 2 (one per address and port) and 1", len(ctx.asks), k.Dropped(stats.AdmissionPending))
	}
	for i, ask := range ctx.asks {
		if !ask.Client.IsZero() || key(ask.Ticket) < firstPlainKey || ask.From != []netip.AddrPort{a, a2}[i] {
			t.Fatalf("ask %d: %+v; want the zero ID, a plain ticket and the client's address", i, ask)
		}
	}
	if ctx.asks[0].Ticket == ctx.asks[1].Ticket {
		t.Fatal("two plain admissions share a ticket")
	}
	ea, ea2 := open(s, ctx.asks[0]), open(s, ctx.asks[1])

	// From the confirmed address, whatever the index.
	sendFrom(s, ctx, a, wgtest.Transport(zeroID, 12345, 0, 64))
	if got := ctx.take(ea); len(got) != 1 {
		t.Fatalf("a's transport reached a's session %d times", len(got))
	}
	// From elsewhere, only with an index the upstream assigned.
	sendFrom(s, ctx, c, wgtest.Transport(zeroID, 77, 0, 64))
	if k.Dropped(stats.ZeroIDUnknownIndex) != 1 {
		t.Fatalf("a transport from an unknown address with an unknown index: %d drops", k.Dropped(stats.ZeroIDUnknownIndex))
	}
	s.indexLearned(&messages.IndexLearned{Handle: uint32(ea.key), Index: 77})
	for _, d := range [][]byte{wgtest.Transport(zeroID, 77, 1, 64), wgtest.Cookie(zeroID, 77), wgtest.Response(zeroID, 5, 77)} {
		sendFrom(s, ctx, c, d)
	}
	if got := ctx.take(ea); len(got) != 3 || got[0] != c {
		t.Fatalf("a's index from %v reached a's session as %v, want 3 datagrams", c, got)
	}
	if got := ctx.take(ea2); len(got) != 0 {
		t.Fatalf("a2's session got %v", got)
	}
	// A rekey from the confirmed address is the session's.
	sendFrom(s, ctx, a, wgtest.Initiation(zeroID, 4))
	if got := ctx.take(ea); len(got) != 1 || len(ctx.asks) != 2 {
		t.Fatalf("a's rekey: %v to its session, %d admissions asked", got, len(ctx.asks))
	}
	// The session moves to c: c's initiations are its, a's would open another.
	s.clientConfirmed(&messages.ClientConfirmed{Handle: uint32(ea.key), Addr: c})
	sendFrom(s, ctx, c, wgtest.Initiation(zeroID, 5))
	sendFrom(s, ctx, a, wgtest.Initiation(zeroID, 6))
	if got := ctx.take(ea); len(got) != 1 || got[0] != c || len(ctx.asks) != 3 || ctx.asks[2].From != a {
		t.Fatalf("after the move: %v to the session, asks %d", got, len(ctx.asks))
	}
	// A session that ends leaves nothing behind.
	s.end(ending{events: eventstream.NewEventStream()}, ea, stats.SessionClosed, closed)
	sendFrom(s, ctx, c, wgtest.Transport(zeroID, 77, 2, 64))
	if got := ctx.take(ea); len(got) != 0 || k.Dropped(stats.ZeroIDUnknownIndex) != 2 {
		t.Fatalf("after the end: %v to the session, %d unknown-index drops", got, k.Dropped(stats.ZeroIDUnknownIndex))
	}
	if _, ok := s.plain.byAddr[c]; ok {
		t.Fatal("the ended session's address is still in the table")
	}
	if s.plain.indexes() != 0 {
		t.Fatalf("%d indexes left", s.plain.indexes())
	}
}

// Without zero_id: track, plain clients are dropped as the seed drops them.
func TestPlainDropped(t *testing.T) {
	s, _ := plainSupervisor(t, nil, messages.Clients{})
	ctx := newPlainCtx()
	sendFrom(s, ctx, netip.MustParseAddrPort("192.0.2.1:1000"), wgtest.Initiation(zeroID, 1))
	if k := s.cfg.Counters; k.Dropped(stats.ZeroClientID) != 1 || len(ctx.asks) != 0 {
		t.Fatalf("%d zero_client_id drops, %d admissions", k.Dropped(stats.ZeroClientID), len(ctx.asks))
	}
}

// One initiation opens one session: a plain client's initiation replayed
// from another address, or under a client ID, is a replay, and so is an
// ID's initiation replayed without its ID.
func TestPlainReplays(t *testing.T) {
	s, _ := plainSupervisor(t, nil, messages.Clients{TrackZeroID: true})
	ctx := newPlainCtx()
	init := wgtest.Initiation(zeroID, 9)
	sendFrom(s, ctx, netip.MustParseAddrPort("192.0.2.1:1000"), init)
	sendFrom(s, ctx, netip.MustParseAddrPort("192.0.2.2:1000"), init)
	withID := append([]byte(nil), init...)
	wgproto.SetClient(withID, wgproto.ClientID{1, 2, 3})
	sendFrom(s, ctx, netip.MustParseAddrPort("192.0.2.3:1000"), withID)
	idInit := wgtest.Initiation(wgproto.ClientID{4, 5, 6}, 10)
	sendFrom(s, ctx, netip.MustParseAddrPort("192.0.2.4:1000"), idInit)
	wgproto.SetClient(idInit, zeroID)
	sendFrom(s, ctx, netip.MustParseAddrPort("192.0.2.5:1000"), idInit)
	if k := s.cfg.Counters; len(ctx.asks) != 2 || k.Dropped(stats.ReplayedInitiation) != 3 {
		t.Fatalf("%d admissions, %d replays; want 2 and 3", len(ctx.asks), k.Dropped(stats.ReplayedInitiation))
	}
}

// The index table keeps each session's newest roam.MaxIndexes, ages them
// out with roam.IndexMaxAge, and never holds more than its capacity:
// what finds no room is refused and counted.
func TestPlainIndexTableBounds(t *testing.T) {
	s, now := plainSupervisor(t, nil, messages.Clients{TrackZeroID: true})
	s.plain = newPlainTable(plainT0, 12)
	ctx := newPlainCtx()
	var es []*entry
	for i := range 3 {
		sendFrom(s, ctx, netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), uint16(1000+i)), wgtest.Initiation(zeroID, uint32(i)))
		es = append(es, open(s, ctx.asks[i]))
	}
	learn := func(e *entry, index uint32) {
		s.indexLearned(&messages.IndexLearned{Handle: uint32(e.key), Index: index})
	}
	for i := range uint32(roam.MaxIndexes + 2) {
		learn(es[0], 100+i)
	}
	if s.plain.byReceiver(100, *now) != nil || s.plain.byReceiver(101, *now) != nil || s.plain.byReceiver(102, *now) != es[0] {
		t.Fatal("a session's oldest indexes were not the ones pushed out")
	}
	if s.plain.evicted != 2 || s.plain.indexes() != roam.MaxIndexes {
		t.Fatalf("evicted %d, holds %d; want 2 and %d", s.plain.evicted, s.plain.indexes(), roam.MaxIndexes)
	}
	for i := range uint32(6) {
		learn(es[1], 200+i)
	}
	if s.plain.indexes() != 12 || s.plain.refused != 2 || s.plain.byReceiver(204, *now) != nil {
		t.Fatalf("holds %d, refused %d; want the capacity of 12 and 2 refused", s.plain.indexes(), s.plain.refused)
	}
	// Old indexes age out: the next index finds room once they have.
	*now = now.Add(roam.IndexMaxAge)
	learn(es[2], 300)
	if s.plain.byReceiver(300, *now) != es[2] || s.plain.byReceiver(102, *now) != nil {
		t.Fatal("aged indexes were not swept for a new one")
	}
	if s.plain.indexes() > 12 {
		t.Fatalf("holds %d, over its capacity", s.plain.indexes())
	}
}

// Routing a plain client's transports, by index or by address, allocates
// nothing.
func TestPlainRouteAllocs(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("sync.Pool drops items under -race; the README's test command runs this guard without -race")
	}
	s, _ := plainSupervisor(t, nil, messages.Clients{TrackZeroID: true})
	ctx := &sink{datagrams: map[*actor.PID]int{}}
	pctx := newPlainCtx()
	from := netip.MustParseAddrPort("192.0.2.1:1000")
	roamed := netip.MustParseAddrPort("192.0.2.9:1000")
	sendFrom(s, pctx, from, wgtest.Initiation(zeroID, 1))
	e := open(s, pctx.asks[0])
	s.indexLearned(&messages.IndexLearned{Handle: uint32(e.key), Index: 7})
	var tmpl [][]byte
	for i := range udpio.MaxBatch {
		tmpl = append(tmpl, wgtest.Transport(zeroID, 7, uint64(i), 208))
	}
	fillFrom := func() *udpio.Batch {
		b := fill(tmpl)
		for i := range b.Datagrams {
			b.Datagrams[i].Addr = []netip.AddrPort{from, roamed}[i%2]
		}
		return b
	}
	for range 10 {
		s.route(ctx, fillFrom())
	}
	if n := testing.AllocsPerRun(1000, func() { s.route(ctx, fillFrom()) }); n != 0 {
		t.Fatalf("routing a batch of plain transports allocates %v times, want 0", n)
	}
	if ctx.datagrams[e.pid] == 0 {
		t.Fatal("nothing reached the session")
	}
}

// The drops a user can fix are explained once per source, with the fix;
// the same source again is not, another source is, and a flood from many
// sources logs a few lines a second, not a line per datagram.
func TestWarnings(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	s, now := plainSupervisor(t, zap.New(core), messages.Clients{})
	ctx := newPlainCtx()
	a := netip.MustParseAddrPort("192.0.2.1:1000")
	for i := range 5 {
		sendFrom(s, ctx, a, wgtest.Transport(zeroID, uint32(i), 0, 64))
		sendFrom(s, ctx, netip.AddrPortFrom(a.Addr(), uint16(2000+i)), wgtest.Transport(zeroID, 1, 0, 64)) // the same source IP
	}
	lines := logs.TakeAll()
	if len(lines) != 1 || lines[0].Message != "zero client ID: plain WireGuard? set reserved bytes, or run with --zero-id track" {
		t.Fatalf("logged %v, want the one hint", lines)
	}
	if f := lines[0].ContextMap(); f["from"] != "192.0.2.1" || f["reason"] != "zero_client_id" {
		t.Fatalf("fields %v", f)
	}
	// Another reason is explained apart, with its own fix.
	wt := wgtest.Transport(wgproto.ClientID{1, 2, 3}, 1, 0, 64)
	wt[0] = 0xc2
	sendFrom(s, ctx, a, wt)
	if lines := logs.TakeAll(); len(lines) != 1 || !strings.Contains(lines[0].Message, "--message-types any") {
		t.Fatalf("logged %v, want the hint for warp_type", lines)
	}
	// Many sources in one second: a few lines.
	for i := range 100 {
		sendFrom(s, ctx, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 1), wgtest.Transport(zeroID, 1, 0, 64))
	}
	if n := logs.Len(); n == 0 || n > warnPerSecond {
		t.Fatalf("%d lines for 100 sources in a second, want 1..%d", n, warnPerSecond)
	}
	logs.TakeAll()
	// The first source is explained again after a while.
	*now = now.Add(warnAgain)
	sendFrom(s, ctx, a, wgtest.Transport(zeroID, 1, 0, 64))
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d lines for a source warned about %v ago, want 1", n, warnAgain)
	}
	if got := s.cfg.Counters.Dropped(stats.ZeroClientID); got != 111 {
		t.Fatalf("%d zero_client_id drops, want every one of the 111 counted", got)
	}
}

// The warnings' memory is what WarnBytes says, and stays so.
func TestWarnBytes(t *testing.T) {
	w := newWarner(zap.NewNop())
	n := 0
	for _, ws := range w.sets {
		if ws != nil {
			n++
		}
	}
	if n == 0 || WarnBytes() != n*int(unsafe.Sizeof(warnSet{})) || WarnBytes() > 32<<10 {
		t.Fatalf("WarnBytes %d for %d reasons", WarnBytes(), n)
	}
}

// BenchmarkRoutePlain routes batches of 64 transports to one session: by
// client ID, and for a plain client by index (half from its confirmed
// address, half from a new one), for the cost of tracking next to an ID.
func BenchmarkRoutePlain(b *testing.B) {
	from := netip.MustParseAddrPort("192.0.2.1:1000")
	roamed := netip.MustParseAddrPort("192.0.2.9:1000")
	id := wgproto.ClientID{1, 2, 3}
	for _, plain := range []bool{false, true} {
		name := "id"
		if plain {
			name = "plain"
		}
		b.Run(name, func(b *testing.B) {
			s, _ := plainSupervisor(b, nil, messages.Clients{TrackZeroID: true})
			pctx := newPlainCtx()
			cid := id
			if plain {
				cid = zeroID
			}
			init := wgtest.Initiation(cid, 1)
			sendFrom(s, pctx, from, init)
			e := open(s, pctx.asks[0])
			s.indexLearned(&messages.IndexLearned{Handle: uint32(e.key), Index: 7})
			var tmpl [][]byte
			for i := range udpio.MaxBatch {
				tmpl = append(tmpl, wgtest.Transport(cid, 7, uint64(i), 208))
			}
			ctx := &sink{datagrams: map[*actor.PID]int{}}
			b.ReportAllocs()
			for b.Loop() {
				in := fill(tmpl)
				for i := range in.Datagrams {
					in.Datagrams[i].Addr = []netip.AddrPort{from, roamed}[i%2]
				}
				s.route(ctx, in)
			}
			b.ReportMetric(float64(b.N*udpio.MaxBatch)/b.Elapsed().Seconds(), "datagrams/s")
		})
	}
}
