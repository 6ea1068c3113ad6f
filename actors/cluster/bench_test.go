package cluster

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/internal/udpio"
)

// childEnv carries the receiver's settings to the benchmark's child
// process: its bind, the parent's bind, and how many datagrams to expect.
const childEnv = "UDPFWD_CLUSTER_BENCH_CHILD"

// cpuNow is this process's user+system CPU time.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// counter counts datagrams; when want have arrived it reports the CPU this
// process spent since the first one.
type counter struct {
	want, got int
	start     time.Duration
	done      chan time.Duration
}

func (c *counter) Receive(ctx actor.Context) {
	m, ok := ctx.Message().(*RemoteDatagrams)
	if !ok {
		return
	}
	if c.got == 0 {
		c.start = cpuNow()
	}
	c.got += len(m.Batch.Datagrams)
	m.Batch.Release()
	if c.got == c.want {
		c.done <- cpuNow() - c.start
	}
}

// TestCrossProcessReceiver is the receiving node of
// BenchmarkCrossProcess, run in a child process; otherwise it skips.
func TestCrossProcessReceiver(t *testing.T) {
	spec := os.Getenv(childEnv)
	if spec == "" {
		t.Skip("runs only as BenchmarkCrossProcess's child")
	}
	f := strings.Split(spec, ",")
	self, parent := netip.MustParseAddrPort(f[0]), netip.MustParseAddrPort(f[1])
	want, _ := strconv.Atoi(f[2])
	n := startNode(t, Config{Name: "bench", Bind: self, Peers: []netip.AddrPort{self, parent}})
	done := make(chan time.Duration, 1)
	pid := n.system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &counter{want: want, done: done} }))
	if _, err := n.Register(clientID(1), pid); err != nil {
		t.Fatal(err)
	}
	fmt.Println("READY")
	fmt.Println("CPU", (<-done).Nanoseconds())
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // the parent closes stdin when done
}

// BenchmarkCrossProcess sends batches of 64 × 200-byte datagrams from this
// process's node to a session on a node in a child process over remote (as
// NOTES measured), keeping the link's window full but never overflowing it,
// and reports the CPU each process spent per datagram. The sender's figure
// includes its membership polling and gossip, which are small next to
// the traffic. It ignores b.N: run it with -benchtime=1x.
func BenchmarkCrossProcess(b *testing.B) {
	const batches = 4000
	want := batches * udpio.MaxBatch
	self, child := freeBind(b), freeBind(b)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrossProcessReceiver$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%d", childEnv, child, self, want))
	stdout, _ := cmd.StdoutPipe()
	stdin, _ := cmd.StdinPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(stdout)
	next := func(prefix string) string {
		for lines.Scan() {
			if s, ok := strings.CutPrefix(lines.Text(), prefix); ok {
				return s
			}
		}
		b.Fatalf("child ended before %q", prefix)
		return ""
	}
	n := startNode(b, Config{Name: "bench", Bind: self, Peers: []netip.AddrPort{self, child}})
	next("READY")
	// The child registered its session before READY; once this node sees
	// the child as a member, the directory answers.
	for !slices.Contains(n.Members(), child.String()) {
		select {
		case <-n.changed:
		case <-time.After(eventTimeout):
			b.Fatal("the child did not join")
		}
	}
	owner := n.Lookup(clientID(1))
	if owner == nil {
		b.Fatal("the child's session is not found")
	}
	ps := payloads(udpio.MaxBatch, 200)
	for i := range ps {
		copy(ps[i][1:4], []byte{0xc0, 0, 1})
	}
	listen := netip.MustParseAddrPort("192.0.2.1:2408")
	from := netip.MustParseAddrPort("198.51.100.7:50000")
	b.ResetTimer()
	start := cpuNow()
	l := n.linkTo(owner.Address)
	for i := range batches {
		// Batches this loop sent that the peer has not acknowledged,
		// counting those still in the link's mailbox.
		for int64(i)-(int64(l.stats.batches.Load())-l.stats.inFlight.Load()) >= linkWindow {
			time.Sleep(20 * time.Microsecond)
		}
		n.Forward(owner, clientID(1), listen, nil, batchOf(from, ps...))
	}
	childNS, _ := strconv.ParseInt(next("CPU "), 10, 64)
	sender := cpuNow() - start
	b.StopTimer()
	if s := peerStats(n.Stats(), child.String()); s.DroppedFull != 0 {
		b.Fatalf("the paced sender overflowed the queue: %+v", s)
	}
	b.ReportMetric(float64(sender.Nanoseconds())/float64(want)/1000, "sender-cpu-µs/datagram")
	b.ReportMetric(float64(childNS)/float64(want)/1000, "receiver-cpu-µs/datagram")
}
