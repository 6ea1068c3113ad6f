package supervisor

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/racecheck"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// sink stands in for the actor context: it counts what each session is
// sent and returns the batches to the pool, as a session would.
type sink struct {
	datagrams map[*actor.PID]int
	messages  int
	spawned   int
}

func (k *sink) Send(pid *actor.PID, m any) {
	b := m.(*messages.ClientDatagrams).Batch()
	k.datagrams[pid] += len(b.Datagrams)
	k.messages++
	b.Release()
}
func (k *sink) Spawn(*actor.Props) *actor.PID { k.spawned++; return actor.NewPID("test", "policy") }
func (k *sink) Request(*actor.PID, any)       {}
func (k *sink) Stop(*actor.PID)               {}

// routeFixture is a supervisor with sessions for n client IDs and a batch
// of datagram templates that mixes them.
func routeFixture(n int) (*Supervisor, []*actor.PID, [][]byte) {
	s := newSupervisor(Config{Counters: &stats.Counters{}, Logger: zap.NewNop(), Upstream: netip.MustParseAddrPort("127.0.0.1:1")})
	var pids []*actor.PID
	var tmpl [][]byte
	for i := 0; i < n; i++ {
		id := wgproto.ClientID{1, byte((i + 1) >> 8), byte(i + 1)}
		pid := actor.NewPID("test", id.String())
		e := &entry{key: idKey(id), pid: pid, info: messages.SessionInfo{Client: id}}
		s.sessions[idKey(id)] = e
		s.byPID[pid.Id] = e
		pids = append(pids, pid)
	}
	for i := 0; i < udpio.MaxBatch; i++ {
		id := wgproto.ClientID{1, byte((i%n + 1) >> 8), byte(i%n + 1)}
		tmpl = append(tmpl, wgtest.Transport(id, uint32(i), uint64(i), 208))
	}
	return s, pids, tmpl
}

func fill(tmpl [][]byte) *udpio.Batch {
	b := udpio.GetBatch()
	from := netip.MustParseAddrPort("127.0.0.1:5000")
	for _, t := range tmpl {
		buf := udpio.GetBuffer()
		copy(buf[:], t)
		b.Add(udpio.Datagram{Buf: buf, N: len(t), Addr: from})
	}
	return b
}

func TestRouteSplitsByClient(t *testing.T) {
	s, pids, tmpl := routeFixture(8)
	k := &sink{datagrams: map[*actor.PID]int{}}
	// Bad datagrams in the same batch are counted and dropped.
	b := fill(tmpl)
	buf := udpio.GetBuffer()
	copy(buf[:], wgtest.Transport(wgproto.ClientID{}, 1, 1, 64))
	b.Datagrams[0] = udpio.Datagram{Buf: buf, N: 64}
	buf2 := udpio.GetBuffer()
	copy(buf2[:], wgtest.Transport(wgproto.ClientID{7, 7, 7}, 1, 1, 64))
	udpio.PutBuffer(b.Datagrams[1].Buf)
	b.Datagrams[1] = udpio.Datagram{Buf: buf2, N: 64}
	s.route(k, b)
	if k.messages != 8 {
		t.Errorf("sent %d messages, want one per session (8)", k.messages)
	}
	total := 0
	for _, pid := range pids {
		total += k.datagrams[pid]
	}
	if total != udpio.MaxBatch-2 {
		t.Errorf("routed %d datagrams, want %d", total, udpio.MaxBatch-2)
	}
	if s.cfg.Counters.Dropped(stats.ZeroClientID) != 1 || s.cfg.Counters.Dropped(stats.UnknownClient) != 1 {
		t.Errorf("drops not counted: zero %d unknown %d", s.cfg.Counters.Dropped(stats.ZeroClientID), s.cfg.Counters.Dropped(stats.UnknownClient))
	}
}

// Parsing and routing a batch allocate nothing in steady state.
func TestRouteAllocs(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("sync.Pool drops items under -race; the README's test command runs this guard without -race")
	}
	s, _, tmpl := routeFixture(8)
	k := &sink{datagrams: map[*actor.PID]int{}}
	for range 10 { // warm the pools
		s.route(k, fill(tmpl))
	}
	allocs := testing.AllocsPerRun(1000, func() { s.route(k, fill(tmpl)) })
	if allocs != 0 {
		t.Fatalf("routing a batch of %d allocates %v times, want 0", udpio.MaxBatch, allocs)
	}
}

func BenchmarkRoute(b *testing.B) {
	for _, n := range []int{1, 8, 1000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			s, _, tmpl := routeFixture(n)
			k := &sink{datagrams: map[*actor.PID]int{}}
			b.ReportAllocs()
			for b.Loop() {
				s.route(k, fill(tmpl))
			}
			b.ReportMetric(float64(b.N*udpio.MaxBatch)/b.Elapsed().Seconds(), "datagrams/s")
		})
	}
}
