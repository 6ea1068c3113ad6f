package supervisor_test

import (
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/supervisor"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// threadCPU is the calling thread's CPU time so far.
func threadCPU() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// processCPU is the process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAdmission opens sessions as fast as the supervisor admits them
// (the budget lifted) and reports the CPU one costs the whole process (the
// policy actor, the upstream socket, the session actor and its reader, and
// ending it) and the supervisor's own part: the supervisor runs inline on
// the benchmark's goroutine, locked to its thread, and that thread's CPU
// time is what admitting and ending sessions cost the relay's one shared
// step, where datagrams wait meanwhile. The admission budget's relay-wide
// rate is sized from it (limits.AdmissionRate).
func BenchmarkAdmission(b *testing.B) {
	up, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	writer := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*messages.ClientReplies); ok {
			m.Batch().Release()
		}
	}))
	counters := &stats.Counters{}
	cfg := supervisor.Config{
		Relay: "bench", Upstream: up.LocalAddr().(*net.UDPAddr).AddrPort(), Writers: []*actor.PID{writer},
		IdleTimeout: time.Hour, Counters: counters, Logger: zap.NewNop(), Poller: newPoller(b, sys),
		Admission: limits.NewAdmission(limits.AdmissionConfig{SourceRate: 1e9, SourceBurst: 1e9, Rate: 1e9, Burst: 1e9}, time.Now()),
	}
	pid := sys.Root.Spawn(supervisor.Props(cfg))
	defer func() { sys.Root.StopFuture(pid).Wait() }()
	x := &fixture{sys: sys, pid: pid, counters: counters}
	// The sessions opened, to end them by their identity.
	var mu sync.Mutex
	var opened []messages.SessionInfo
	sub := sys.EventStream.Subscribe(func(evt any) {
		if e, ok := evt.(*messages.SessionOpened); ok {
			mu.Lock()
			opened = append(opened, e.SessionInfo)
			mu.Unlock()
		}
	})
	defer sys.EventStream.Unsubscribe(sub)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	n := 0
	cpu0, thread0 := processCPU(), threadCPU()
	for b.Loop() {
		ids := make([]wgproto.ClientID, 16)
		for i := range ids {
			n++
			ids[i] = wgproto.ClientID{0x50, byte(n >> 8), byte(n)}
		}
		x.initiate(ids...)
		deadline := time.Now().Add(waitTimeout)
		for counters.Events(stats.SessionOpened) < uint64(n) {
			if time.Now().After(deadline) {
				b.Fatalf("%d sessions opened of %d; %d dropped", counters.Events(stats.SessionOpened), n, counters.TotalDropped())
			}
			time.Sleep(50 * time.Microsecond)
		}
		mu.Lock()
		for _, info := range opened {
			sys.Root.Send(pid, &messages.SessionIdle{Session: info, Side: "client"})
		}
		opened = opened[:0]
		mu.Unlock()
	}
	b.ReportMetric(float64((threadCPU()-thread0).Microseconds())/float64(n), "supervisor-µs/session")
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(n), "cpu-µs/session")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(n), "wall-µs/session")
}
