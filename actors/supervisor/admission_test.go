package supervisor

import (
	"net/netip"
	"testing"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/internal/racecheck"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// Refusing a flood allocates nothing: a batch of one initiation replayed
// under 64 client IDs, and a batch of fresh initiations over the source's
// budget, are routed and counted without an allocation, as a flood's
// datagrams are.
func TestRefusedAdmissionAllocs(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("sync.Pool drops items under -race; the README's test command runs this guard without -race")
	}
	s := newSupervisor(Config{Counters: &stats.Counters{}, Logger: zap.NewNop(), Policy: policy.AllowAll,
		Upstream: netip.MustParseAddrPort("127.0.0.1:1")})
	k := &sink{datagrams: map[*actor.PID]int{}}
	from := netip.MustParseAddrPort("192.0.2.1:5000")
	one := wgtest.Initiation(wgproto.ClientID{1, 1, 1}, 1)
	n := 0
	batch := func(fresh bool) *udpio.Batch {
		b := udpio.GetBatch()
		for range udpio.MaxBatch {
			n++
			buf := udpio.GetBuffer()
			copy(buf[:], one)
			buf[1], buf[2], buf[3] = 0x90, byte(n>>8), byte(n)
			if fresh {
				buf[8], buf[9], buf[10] = byte(n>>16), byte(n>>8), byte(n)
			}
			b.Add(udpio.Datagram{Buf: buf, N: len(one), Addr: from})
		}
		return b
	}
	// Warm up: the first initiation opens an admission, the source's burst
	// goes, and the pools fill.
	for range 10 {
		s.route(k, batch(false))
		s.route(k, batch(true))
	}
	for _, fresh := range []bool{false, true} {
		if allocs := testing.AllocsPerRun(200, func() { s.route(k, batch(fresh)) }); allocs != 0 {
			t.Errorf("refusing a batch of %d initiations (fresh %v) allocates %v times, want 0", udpio.MaxBatch, fresh, allocs)
		}
	}
	if s.cfg.Counters.Dropped(stats.ReplayedInitiation) == 0 || s.cfg.Counters.Dropped(stats.AdmissionOverload) == 0 {
		t.Fatal("the batches were not refused as replays and over budget")
	}
}
