package supervisor

import (
	"fmt"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/replay"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// FuzzAdmission drives the admission path (route, admit, the answers of
// policies, sessions ending) with random sequences of datagrams from
// several sources, with and without a mac1 key, on an injected clock, and
// checks after every step:
//
//   - nothing panics;
//   - every datagram is accounted for: routed to a session, held by an
//     admission, or counted as dropped under one reason;
//   - the admissions in flight never exceed MaxAdmissions;
//   - every admission asked for a session came from a well-formed
//     initiation with a valid mac1 (when the key is set), under the client
//     ID and from the source it asks for;
//   - one initiation never asks under two client IDs within replay.TTL;
//   - no source asks more often than its budget allows, nor all of them
//     more than the relay-wide budget, over the clock's time.
//
// The input is a sequence of 4-byte events (see fuzzEvent).
func FuzzAdmission(f *testing.F) {
	// The seeds: a clean admission, a replay under another ID, a burst
	// from one source, junk, and answers and session ends in between.
	f.Add(evts(fev(fuzzSend, 0, 0, 0), fev(fuzzAnswer, 0, 0, 0), fev(fuzzSend, 0, 0, 0)))
	f.Add(evts(fev(fuzzSend, 0, 1, 0), fev(fuzzSend, 1, 2, 0), fev(fuzzSend, 2, 3, 0), fev(fuzzAnswer, 1, 0, 0)))
	f.Add(evts(fev(fuzzSend, 0, 0, 3), fev(fuzzSend, 0, 1, 4), fev(fuzzSend, 0, 2, 5), fev(fuzzSend, 0, 3, 6),
		fev(fuzzClock, 0, 0, 7), fev(fuzzSend, 0, 4, 7)))
	f.Add(evts(fev(fuzzSend, 3, 5, 0x81), fev(fuzzSend, 4, 6, 0x82), fev(fuzzSend, 5, 0, 0x83), fev(fuzzEnd, 0, 0, 0)))
	f.Add(append([]byte{1}, evts(fev(fuzzSend, 0, 0, 0), fev(fuzzSend, 0, 0, 0x40), fev(fuzzAnswer, 0, 1, 0))...))
	f.Fuzz(func(t *testing.T, in []byte) {
		h := newFuzzHarness(len(in) > 0 && in[0]&1 == 1)
		if len(in) > 0 {
			in = in[1:]
		}
		for i := 0; i+4 <= len(in); i += 4 {
			h.step(t, in[i:i+4])
			h.check(t)
		}
	})
}

// The events: byte 0 mod 4 is the kind, the rest its arguments.
const (
	// fuzzSend: a batch of datagrams. byte 1: the source (fuzzSources),
	// byte 2: the first client ID (fuzzIDs; the batch's others follow),
	// byte 3: low 3 bits the batch's size less one, the bits above what
	// they are (fuzzKinds), from a small pool so that replays are
	// frequent.
	fuzzSend = iota
	// fuzzClock: the clock moves by fuzzSteps[byte 1 mod len].
	fuzzClock
	// fuzzAnswer: a policy answers. byte 1 picks one of the admissions in
	// flight (in client ID order); byte 2 even admits it (it becomes a
	// session, its initiation forwarded), odd refuses it.
	fuzzAnswer
	// fuzzEnd: the session picked by byte 1 ends.
	fuzzEnd
)

const (
	fuzzSources = 6  // two IPv4 addresses, three IPv6 addresses in one /64, one in another
	fuzzIDs     = 10 // client IDs, one of them zero
)

var fuzzSteps = [...]time.Duration{0, time.Millisecond, 50 * time.Millisecond, time.Second, 5 * time.Second, time.Minute, replay.TTL, 10 * time.Minute}

func fev(kind, a, b, c byte) []byte { return []byte{kind, a, b, c} }

func evts(events ...[]byte) []byte {
	b := []byte{0}
	for _, e := range events {
		b = append(b, e...)
	}
	return b
}

var fuzzT0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// fuzzCtx is the actor context for routing: it counts what sessions are
// sent, gives each policy a PID of its own and records what it is asked.
type fuzzCtx struct {
	routed int
	asks   []*messages.AdmitSession
	n      int
}

func (c *fuzzCtx) Send(_ *actor.PID, m any) {
	b := m.(*messages.ClientDatagrams).Batch()
	c.routed += len(b.Datagrams)
	b.Release()
}
func (c *fuzzCtx) Spawn(*actor.Props) *actor.PID {
	c.n++
	return actor.NewPID("fuzz", fmt.Sprintf("policy-%d", c.n))
}
func (c *fuzzCtx) Request(_ *actor.PID, m any) { c.asks = append(c.asks, m.(*messages.AdmitSession)) }
func (c *fuzzCtx) Stop(*actor.PID)             {}

type fuzzHarness struct {
	s       *Supervisor
	ctx     *fuzzCtx
	now     time.Time
	key     *wgproto.MAC1Key
	sources [fuzzSources]netip.AddrPort
	ids     [fuzzIDs]wgproto.ClientID
	inits   [8][]byte // the initiation pool: [0..5] valid mac1, [6..7] not

	sent int
	// What was sent this step: the valid initiations, by client and
	// source, and the content key of each.
	valid map[validInit]uint64
	// firstID is the client ID each initiation content first asked under,
	// and when.
	firstID map[uint64]struct {
		id wgproto.ClientID
		at time.Time
	}
	asksBySource map[netip.Prefix]int
	asked        int
}

type validInit struct {
	client wgproto.ClientID
	from   netip.AddrPort
}

func newFuzzHarness(withKey bool) *fuzzHarness {
	h := &fuzzHarness{now: fuzzT0, ctx: &fuzzCtx{}, valid: map[validInit]uint64{},
		firstID: map[uint64]struct {
			id wgproto.ClientID
			at time.Time
		}{}, asksBySource: map[netip.Prefix]int{}}
	cfg := Config{
		Counters: &stats.Counters{}, Logger: zap.NewNop(), Upstream: netip.MustParseAddrPort("127.0.0.1:1"), Policy: policy.AllowAll,
		// A small budget, so that the fuzzer reaches its limits.
		Admission: limits.NewAdmission(limits.AdmissionConfig{SourceRate: 2, SourceBurst: 3, Rate: 5, Burst: 8}, fuzzT0),
		Replays:   replay.New(replay.Entries, replay.TTL, fuzzT0), // large enough that the pool of initiations never evicts one
	}
	pub, _ := wgproto.ParsePublicKey(wgproto.WARPPublicKey)
	key := wgproto.NewMAC1Key(pub)
	if withKey {
		cfg.MAC1 = &key
		h.key = &key
	}
	h.s = newSupervisor(cfg)
	h.s.now = func() time.Time { return h.now }
	for i, a := range []string{"192.0.2.1:1000", "192.0.2.2:1000", "[2001:db8:1:2::1]:1000", "[2001:db8:1:2::2]:2000", "[2001:db8:1:2::3]:1000", "[2001:db8:9::1]:1000"} {
		h.sources[i] = netip.MustParseAddrPort(a)
	}
	for i := 1; i < fuzzIDs; i++ {
		h.ids[i] = wgproto.ClientID{0x80, 0, byte(i)}
	}
	for i := range h.inits {
		b := wgtest.Initiation(wgproto.ClientID{}, uint32(1000+i))
		if i < 6 {
			wgproto.PutMAC1(b, key)
		}
		h.inits[i] = b
	}
	return h
}

// fuzzKinds: what a datagram of a batch is.
const (
	kindInit  = iota // an initiation from the pool (by the datagram's place)
	kindTrans        // a transport message
	kindShort        // 3 bytes
	kindBad          // an initiation of the wrong size
	fuzzKinds
)

func (h *fuzzHarness) step(t *testing.T, e []byte) {
	t.Helper()
	switch e[0] % 4 {
	case fuzzSend:
		h.send(t, e[1], e[2], e[3])
	case fuzzClock:
		h.now = h.now.Add(fuzzSteps[int(e[1])%len(fuzzSteps)])
	case fuzzAnswer:
		if len(h.s.pending) == 0 {
			return
		}
		client, p := h.pick(int(e[1]))
		if e[2]%2 == 1 {
			h.s.dropAdmission(idKey(client), p, stats.PolicyRefused, h.ctx.Stop)
			return
		}
		// Admitted: the session opens with the held initiation as its
		// first datagram (admitted, without the socket and the actor).
		delete(h.s.pending, idKey(client))
		e := &entry{key: idKey(client), pid: actor.NewPID("fuzz", "session-"+client.String()), policy: p.policy, info: messages.SessionInfo{Client: client}}
		h.s.sessions[idKey(client)] = e
		h.s.byPID[e.pid.Id] = e
		udpio.PutBuffer(p.first.Buf)
		h.ctx.routed++
	case fuzzEnd:
		if len(h.s.sessions) == 0 {
			return
		}
		ids := make([]wgproto.ClientID, 0, len(h.s.sessions))
		for k := range h.s.sessions {
			ids = append(ids, keyID(k))
		}
		sortIDs(ids)
		id := ids[int(e[1])%len(ids)]
		delete(h.s.byPID, h.s.sessions[idKey(id)].pid.Id)
		delete(h.s.sessions, idKey(id))
	}
}

func sortIDs(ids []wgproto.ClientID) {
	for a := 1; a < len(ids); a++ {
		for b := a; b > 0 && string(ids[b][:]) < string(ids[b-1][:]); b-- {
			ids[b], ids[b-1] = ids[b-1], ids[b]
		}
	}
}

// pick returns the i-th admission in flight, in client ID order.
func (h *fuzzHarness) pick(i int) (wgproto.ClientID, *pending) {
	var ids []wgproto.ClientID
	for k := range h.s.pending {
		ids = append(ids, keyID(k))
	}
	sortIDs(ids)
	id := ids[i%len(ids)]
	return id, h.s.pending[idKey(id)]
}

func (h *fuzzHarness) send(t *testing.T, src, id, shape byte) {
	t.Helper()
	from := h.sources[int(src)%fuzzSources]
	n := int(shape&7) + 1
	kind := int(shape>>3) % fuzzKinds
	b := udpio.GetBatch()
	clear(h.valid)
	for i := range n {
		client := h.ids[(int(id)+i)%fuzzIDs]
		var d []byte
		switch kind {
		case kindInit:
			d = append([]byte(nil), h.inits[(int(id)+int(shape)+i)%len(h.inits)]...)
			copy(d[1:4], client[:])
		case kindTrans:
			d = wgtest.Transport(client, uint32(i), uint64(i), 64)
		case kindShort:
			d = []byte{1, client[0], client[1]}
		case kindBad:
			d = wgtest.Initiation(client, 5)[:100]
		}
		if hd, v := wgproto.Parse(d); v == wgproto.OK && hd.Type == wgproto.TypeInitiation &&
			(h.key == nil || wgproto.NewMAC1Checker(*h.key).Valid(d)) {
			h.valid[validInit{client, from}] = h.s.replays.Key(d)
		}
		buf := udpio.GetBuffer()
		copy(buf[:], d)
		b.Add(udpio.Datagram{Buf: buf, N: len(d), Addr: from})
		h.sent++
	}
	asked := len(h.ctx.asks)
	h.s.route(h.ctx, b)
	for _, a := range h.ctx.asks[asked:] {
		h.checkAsk(t, a)
	}
}

// checkAsk checks one admission asked for in this step.
func (h *fuzzHarness) checkAsk(t *testing.T, a *messages.AdmitSession) {
	t.Helper()
	key, ok := h.valid[validInit{a.Client, a.From}]
	if !ok {
		t.Fatalf("asked a session for %v from %v, which sent no valid initiation", a.Client, a.From)
	}
	if first, seen := h.firstID[key]; seen && first.id != a.Client && h.now.Sub(first.at) < replay.TTL {
		t.Fatalf("one initiation asked under %v and then %v, %v later", first.id, a.Client, h.now.Sub(first.at))
	}
	h.firstID[key] = struct {
		id wgproto.ClientID
		at time.Time
	}{a.Client, h.now}
	h.asked++
	h.asksBySource[sourceOf(a.From.Addr())]++
}

// sourceOf is ip's source as the budget counts them: an IPv4 address, an
// IPv6 /64.
func sourceOf(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

func (h *fuzzHarness) check(t *testing.T) {
	k := h.s.cfg.Counters
	held := len(h.s.pending) // each holds its initiation
	if got := h.ctx.routed + held + int(k.TotalDropped()); got != h.sent {
		t.Fatalf("%d datagrams sent, %d routed, %d held by admissions, %d dropped: %d unaccounted",
			h.sent, h.ctx.routed, held, k.TotalDropped(), h.sent-got)
	}
	if held > MaxAdmissions {
		t.Fatalf("%d admissions in flight, bound %d", held, MaxAdmissions)
	}
	elapsed := h.now.Sub(fuzzT0).Seconds()
	if most := 8 + int(math.Ceil(5*elapsed)); h.asked > most {
		t.Fatalf("%d admissions asked in %.1f s: the relay-wide budget allows %d", h.asked, elapsed, most)
	}
	for src, n := range h.asksBySource {
		if most := 3 + int(math.Ceil(2*elapsed)); n > most {
			t.Fatalf("%d admissions asked from %v in %.1f s: its budget allows %d", n, src, elapsed, most)
		}
	}
}
