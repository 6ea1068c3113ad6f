package supervisor

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/replay"
	"github.com/udpfwd/udpfwd/internal/roam"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// FuzzZeroIDRouting drives the routing of plain clients (zero_id: track)
// with random sequences: plain clients' initiations (fresh and replayed),
// transports, responses and cookies carrying the indexes their sessions
// learned, forgers sending the same with indexes no upstream assigned,
// client IDs mixed in, policies answering, upstreams answering handshakes
// (and starting their own), sessions ending, time passing. Each session is
// stood in for by a roam.Peer that tells the supervisor what a session
// does (the indexes it learns, its client's moves), after the batch, as
// the supervisor's mailbox would. After every step it checks:
//
//   - nothing panics;
//   - every datagram is accounted for: routed, held by an admission, or
//     counted as dropped;
//   - a plain session is sent only its own client's datagrams: from its
//     confirmed address, or carrying one of its live learned indexes;
//     nothing a forger sends reaches any session;
//   - replies go only to confirmed addresses, never to a forger's, and the
//     supervisor's view of each session's address is its roam.Peer's;
//   - the index table stays within its capacity and the indexes of its
//     sessions, and refers to no ended session; the address table to no
//     ended session or admission.
//
// The input is a sequence of 4-byte events (see plainEvent).
func FuzzZeroIDRouting(f *testing.F) {
	f.Add(pevs(pev(evSend, 0, sendInit, 0), pev(evAnswer, 0, 0, 0), pev(evUpstream, 0, upResponse, 0),
		pev(evSend, 0, sendTransport, 0), pev(evSend, 3, sendTransport, 0), pev(evSend, 6, sendTransport, 9)))
	f.Add(pevs(pev(evSend, 0, sendInit, 0), pev(evSend, 1, sendInit, 0), pev(evAnswer, 0, 0, 0), pev(evAnswer, 0, 0, 0),
		pev(evUpstream, 1, upResponse, 0), pev(evSend, 2, sendTransport, 1), pev(evSend, 2, sendInit, 0),
		pev(evUpstream, 0, upInitiation, 0), pev(evSend, 0, sendResponse, 0), pev(evClock, 0, 5, 0), pev(evSend, 0, sendTransport, 0)))
	f.Add(pevs(pev(evSend, 0, sendInit, 0), pev(evSend, 4, sendReplay, 0), pev(evSend, 7, sendCookie, 3), pev(evAnswer, 0, 1, 0),
		pev(evSend, 5, sendID, 2), pev(evClock, 1, 0, 0)))
	f.Add(pevs(pev(evSend, 0, sendInit, 0), pev(evAnswer, 0, 0, 0), pev(evUpstream, 0, upResponse, 0), pev(evUpstream, 0, upResponse, 0),
		pev(evUpstream, 0, upResponse, 0), pev(evUpstream, 0, upResponse, 0), pev(evUpstream, 0, upResponse, 0),
		pev(evSend, 1, sendInit, 0), pev(evAnswer, 0, 0, 0), pev(evUpstream, 1, upResponse, 0), pev(evUpstream, 1, upResponse, 0),
		pev(evUpstream, 1, upCookie, 0), pev(evClock, 0, 7, 0), pev(evSend, 5, sendTransport, 0), pev(evClock, 1, 0, 1)))
	f.Fuzz(func(t *testing.T, in []byte) {
		h := newPlainHarness()
		for i := 0; i+4 <= len(in); i += 4 {
			h.step(t, in[i:i+4])
			h.check(t)
		}
	})
}

func pev(kind, a, b, c byte) []byte { return []byte{kind, a, b, c} }

func pevs(events ...[]byte) []byte { return slices.Concat(events...) }

// The events: byte 0 mod 5 is the kind, the rest its arguments.
const (
	// evSend: byte 1 the source (plainSources: the first plainClients
	// are clients' addresses, the rest forgers'), byte 2 mod sendKinds what
	// is sent, byte 3 which session's index, or which initiation.
	evSend = iota
	// evAnswer: byte 1 picks an admission in flight; byte 2 even admits
	// it, odd refuses it.
	evAnswer
	// evUpstream: the upstream of the session picked by byte 1 sends
	// (byte 2 mod upKinds).
	evUpstream
	// evClock: byte 1 even: time moves by plainSteps[byte 2]; odd: the
	// session picked by byte 3 ends.
	evClock
	// evLearnFull: the session picked by byte 1 learns indexes until the
	// table refuses one (an attacker's many handshakes).
	evLearnFull
	plainEventKinds
)

// What a source sends.
const (
	sendInit      = iota // a fresh plain initiation (clients only; a forger sends a transport)
	sendTransport        // a transport with a session's learned index (a client), a forged index (a forger)
	sendResponse         // a handshake response to an upstream's initiation, likewise
	sendCookie           // a cookie reply, likewise
	sendReplay           // an earlier plain initiation again (clients only)
	sendID               // an ID client's initiation or transport
	sendKinds
)

// What an upstream sends.
const (
	upResponse   = iota // a handshake response with a fresh index, answering the session's latest initiation
	upInitiation        // an initiation of its own, with a fresh index
	upCookie            // a cookie reply to the latest initiation
	upTransport         // data
	upKinds
)

const (
	plainClients = 6 // client addresses: three IPs, two ports each
	plainSources = 8 // and two forgers
	plainCap     = 24
)

var plainSteps = [...]time.Duration{0, time.Millisecond, time.Second, 5 * time.Second, roam.PendingMaxAge, time.Minute, roam.IndexMaxAge / 2, roam.IndexMaxAge}

// fakeSession stands in for a plain session: its roam.Peer, and the
// sender index of the newest initiation it forwarded.
type fakeSession struct {
	e     *entry
	peer  roam.Peer
	last  uint32
	inits []uint32
}

type plainHarness struct {
	s        *Supervisor
	now      time.Time
	sources  [plainSources]netip.AddrPort
	ctx      *plainFuzzCtx
	sessions map[key]*fakeSession
	// notices are what sessions told the supervisor in this step, applied
	// after routing, as its mailbox would deliver them.
	notices []any
	sent    int
	routed  int
	inits   [][]byte // plain initiations sent, for replays
	nextIdx uint32   // upstream indexes: 1..2^31-1; forgers' have the top bit set
	nextTx  uint32   // clients' sender indexes
	forged  uint32
}

type plainFuzzCtx struct {
	h *plainHarness
	t *testing.T
	n int
}

func newPlainHarness() *plainHarness {
	h := &plainHarness{now: plainT0, sessions: map[key]*fakeSession{}}
	h.s = newSupervisor(Config{
		Counters: &stats.Counters{}, Logger: zap.NewNop(), Upstream: netip.MustParseAddrPort("127.0.0.1:1"), Policy: policy.AllowAll,
		Admission: limits.NewAdmission(limits.AdmissionConfig{}, plainT0),
		Replays:   replay.New(4096, replay.TTL, plainT0), // more than a sequence sends: none is pushed out
		Clients:   messages.Clients{TrackZeroID: true},
	})
	h.s.now = func() time.Time { return h.now }
	h.s.plain = newPlainTable(plainT0, plainCap)
	for i, a := range []string{"192.0.2.1:1000", "192.0.2.1:1001", "192.0.2.2:1000", "192.0.2.2:1001", "[2001:db8::1]:1000", "[2001:db8::1]:1001",
		"203.0.113.66:6666", "[2001:db8:bad::1]:6666"} {
		h.sources[i] = netip.MustParseAddrPort(a)
	}
	h.ctx = &plainFuzzCtx{h: h}
	return h
}

func (h *plainHarness) forger(a netip.AddrPort) bool {
	return slices.Contains(h.sources[plainClients:], a)
}

// live returns the live fake sessions in key order.
func (h *plainHarness) live() []*fakeSession {
	keys := make([]key, 0, len(h.sessions))
	for k := range h.sessions {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]*fakeSession, 0, len(keys))
	for _, k := range keys {
		out = append(out, h.sessions[k])
	}
	return out
}

func (h *plainHarness) pick(i byte) *fakeSession {
	l := h.live()
	if len(l) == 0 {
		return nil
	}
	return l[int(i)%len(l)]
}

// Send is the sessions' side: a batch routed to a session.
func (c *plainFuzzCtx) Send(pid *actor.PID, m any) {
	h, t := c.h, c.t
	b := m.(*messages.ClientDatagrams).Batch()
	defer b.Release()
	h.routed += len(b.Datagrams)
	var fs *fakeSession
	for _, x := range h.sessions {
		if x.e.pid.Id == pid.Id {
			fs = x
		}
	}
	if fs == nil { // an ID client's session
		return
	}
	for _, d := range b.Datagrams {
		hd, v := wgproto.Parse(d.Bytes())
		if v != wgproto.ZeroClient {
			t.Fatalf("a %v datagram reached plain session %d", v, fs.e.key)
		}
		if h.forger(d.Addr) {
			t.Fatalf("a forger's %v from %v reached session %d", hd.Type, d.Addr, fs.e.key)
		}
		if d.Addr != fs.e.plain.addr {
			index, ok := hd.ReceiverIndex()
			ie, known := h.s.plain.byIndex[index]
			if !ok || !known || ie.e != fs.e {
				t.Fatalf("a %v with index %d from %v reached session %d, whose client is at %v", hd.Type, index, d.Addr, fs.e.key, fs.e.plain.addr)
			}
		}
		if hd.Type == wgproto.TypeInitiation {
			fs.last = hd.Index
		}
		if fs.peer.FromClient(h.now, hd, d.Addr, 0) {
			h.notices = append(h.notices, &messages.ClientConfirmed{Handle: uint32(fs.e.key), Addr: fs.peer.Addr()})
		}
	}
}
func (c *plainFuzzCtx) Spawn(*actor.Props) *actor.PID {
	c.n++
	return actor.NewPID("fuzz", fmt.Sprintf("policy-%d", c.n))
}
func (c *plainFuzzCtx) Request(*actor.PID, any) {}
func (c *plainFuzzCtx) Stop(*actor.PID)         {}

func (h *plainHarness) step(t *testing.T, ev []byte) {
	t.Helper()
	h.ctx.t = t
	switch ev[0] % plainEventKinds {
	case evSend:
		h.send(t, ev[1], ev[2], ev[3])
	case evAnswer:
		h.answer(ev[1], ev[2])
	case evUpstream:
		h.upstream(t, ev[1], ev[2])
	case evClock:
		if ev[1]%2 == 0 {
			h.now = h.now.Add(plainSteps[int(ev[2])%len(plainSteps)])
		} else if fs := h.pick(ev[3]); fs != nil {
			h.s.end(ending{events: nopStream}, fs.e, stats.SessionExpired, closed)
			delete(h.sessions, fs.e.key)
		}
	case evLearnFull:
		if fs := h.pick(ev[1]); fs != nil {
			for before := h.s.plain.refused; h.s.plain.refused == before && h.nextIdx < 1<<20; {
				h.nextIdx++
				h.s.indexLearned(&messages.IndexLearned{Handle: uint32(fs.e.key), Index: h.nextIdx})
			}
		}
	}
	h.deliver()
}

// deliver hands the supervisor what the sessions told it.
func (h *plainHarness) deliver() {
	for _, n := range h.notices {
		switch n := n.(type) {
		case *messages.IndexLearned:
			h.s.indexLearned(n)
		case *messages.ClientConfirmed:
			h.s.clientConfirmed(n)
		}
	}
	h.notices = h.notices[:0]
}

func (h *plainHarness) send(t *testing.T, src, kind, arg byte) {
	from := h.sources[int(src)%plainSources]
	forger := h.forger(from)
	kind %= sendKinds
	if forger && (kind == sendInit || kind == sendReplay) {
		kind = sendTransport
	}
	// The index a client's datagram carries: one its session learned (by
	// arg), else any; a forger's is one no upstream assigns.
	index := uint32(arg)
	if fs := h.pick(arg); fs != nil {
		if idx := liveIndexes(h, fs); len(idx) > 0 {
			index = idx[int(arg)%len(idx)]
		}
	}
	if forger {
		h.forged++
		index = 1<<31 | h.forged
	}
	var d []byte
	switch kind {
	case sendInit:
		h.nextTx++
		d = wgtest.Initiation(wgproto.ClientID{}, h.nextTx)
		h.inits = append(h.inits, d)
	case sendTransport:
		d = wgtest.Transport(wgproto.ClientID{}, index, uint64(arg), 64)
	case sendResponse:
		h.nextTx++
		d = wgtest.Response(wgproto.ClientID{}, h.nextTx, index)
	case sendCookie:
		d = wgtest.Cookie(wgproto.ClientID{}, index)
	case sendReplay:
		if len(h.inits) == 0 {
			return
		}
		d = h.inits[int(arg)%len(h.inits)]
	case sendID:
		id := wgproto.ClientID{0x11, 0, arg % 4}
		if arg%2 == 0 {
			d = wgtest.Initiation(id, uint32(arg))
		} else {
			d = wgtest.Transport(id, uint32(arg), 0, 64)
		}
	}
	b := udpio.GetBatch()
	buf := udpio.GetBuffer()
	copy(buf[:], d)
	b.Add(udpio.Datagram{Buf: buf, N: len(d), Addr: from})
	h.sent++
	h.s.route(h.ctx, b)
}

// liveIndexes are the indexes of fs's peer the table knows as fs's.
func liveIndexes(h *plainHarness, fs *fakeSession) []uint32 {
	var out []uint32
	for index, ie := range h.s.plain.byIndex {
		if ie.e == fs.e {
			out = append(out, index)
		}
	}
	slices.Sort(out)
	return out
}

func (h *plainHarness) answer(pick, verdict byte) {
	if len(h.s.pending) == 0 {
		return
	}
	keys := make([]key, 0, len(h.s.pending))
	for k := range h.s.pending {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	k := keys[int(pick)%len(keys)]
	p := h.s.pending[k]
	if verdict%2 == 1 {
		h.s.dropAdmission(k, p, stats.PolicyRefused, h.ctx.Stop)
		return
	}
	delete(h.s.pending, k)
	var client wgproto.ClientID
	if !k.isPlain() {
		client = keyID(k)
	}
	e := &entry{key: k, pid: actor.NewPID("fuzz", fmt.Sprintf("session-%d", k)), policy: p.policy,
		info: messages.SessionInfo{Client: client, ClientAddr: p.first.Addr}, stats: stats.NewSession(h.now, h.now, p.first.Addr)}
	h.s.enter(e)
	h.routed++ // its initiation, forwarded as the session's first datagram
	if k.isPlain() {
		fs := &fakeSession{e: e}
		fs.peer.FromClient(h.now, wgproto.Header{}, p.first.Addr, 0) // the opening address
		hd, _ := wgproto.Parse(p.first.Bytes())
		fs.peer.FromClient(h.now, hd, p.first.Addr, 0)
		fs.last = hd.Index
		h.sessions[k] = fs
	}
	udpio.PutBuffer(p.first.Buf)
}

// upstream has the upstream of a session send it something; the session
// learns, tells the supervisor, and addresses the reply.
func (h *plainHarness) upstream(t *testing.T, pick, kind byte) {
	fs := h.pick(pick)
	if fs == nil {
		return
	}
	var hd wgproto.Header
	switch kind % upKinds {
	case upResponse:
		h.nextIdx++
		hd = wgproto.Header{Type: wgproto.TypeResponse, Index: h.nextIdx, Receiver: fs.last}
	case upInitiation:
		h.nextIdx++
		hd = wgproto.Header{Type: wgproto.TypeInitiation, Index: h.nextIdx}
	case upCookie:
		hd = wgproto.Header{Type: wgproto.TypeCookie, Index: fs.last}
	case upTransport:
		hd = wgproto.Header{Type: wgproto.TypeTransport, Index: 1}
	}
	to, _, moved, ok := fs.peer.FromUpstream(h.now, hd)
	if hd.Type == wgproto.TypeResponse || hd.Type == wgproto.TypeInitiation {
		h.s.indexLearned(&messages.IndexLearned{Handle: uint32(fs.e.key), Index: hd.Index}) // before the reply leaves
	}
	if moved {
		h.notices = append(h.notices, &messages.ClientConfirmed{Handle: uint32(fs.e.key), Addr: fs.peer.Addr()})
	}
	if ok && h.forger(to) {
		t.Fatalf("session %d sends a %v to the forger at %v", fs.e.key, hd.Type, to)
	}
}

// nopStream is the event stream of sessions ending in the fuzz: nobody
// listens.
var nopStream = eventstream.NewEventStream()

func (h *plainHarness) check(t *testing.T) {
	k := h.s.cfg.Counters
	held := len(h.s.pending)
	if got := h.routed + held + int(k.TotalDropped()); got != h.sent {
		t.Fatalf("%d datagrams sent, %d routed, %d held, %d dropped: %d unaccounted", h.sent, h.routed, held, k.TotalDropped(), h.sent-got)
	}
	t.Helper()
	plain := 0
	for k, e := range h.s.sessions {
		if e.key != k {
			t.Fatalf("session %d entered as %d", e.key, k)
		}
		if !k.isPlain() {
			continue
		}
		plain++
		fs := h.sessions[k]
		if e.plain.addr != fs.peer.Addr() {
			t.Fatalf("session %d: the supervisor has its client at %v, its peer at %v", k, e.plain.addr, fs.peer.Addr())
		}
		if h.forger(e.plain.addr) {
			t.Fatalf("session %d confirmed the forger at %v", k, e.plain.addr)
		}
	}
	if n := h.s.plain.indexes(); n > plainCap || n > plain*roam.MaxIndexes {
		t.Fatalf("the index table holds %d indexes for %d plain sessions, capacity %d", n, plain, plainCap)
	}
	for index, ie := range h.s.plain.byIndex {
		if h.s.sessions[ie.e.key] != ie.e {
			t.Fatalf("index %d refers to ended session %d", index, ie.e.key)
		}
	}
	for addr, k := range h.s.plain.byAddr {
		if h.s.sessions[k] == nil && h.s.pending[k] == nil {
			t.Fatalf("address %v refers to %d, neither a session nor an admission", addr, k)
		}
	}
}
