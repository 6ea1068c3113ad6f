package cluster

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/udpfwd/udpfwd/internal/logx"
	"github.com/udpfwd/udpfwd/internal/racecheck"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// eventTimeout bounds every wait for a cluster event. Membership converges in
// about 2 s here (static peers poll every second; etcd watches); the bound is
// generous for a loaded CI machine and is never slept, only waited on.
const eventTimeout = 30 * time.Second

// freeBind returns a loopback address whose port and port+HealthPortOffset
// were both free a moment ago. The cluster needs its ports known before it
// starts (peers are configured by address), so the test takes them from :0
// and hands them back.
func freeBind(t testing.TB) netip.AddrPort {
	t.Helper()
	for range 100 {
		a, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ap := netip.MustParseAddrPort(a.Addr().String())
		b, err := net.Listen("tcp", healthAddr(ap).String())
		a.Close()
		if err == nil {
			b.Close()
			return ap
		}
	}
	t.Fatal("no free pair of loopback ports")
	return netip.AddrPort{}
}

// testNode is a node with its own actor system and a record of its events.
type testNode struct {
	*Node
	system  *actor.ActorSystem
	changed chan struct{} // a membership event arrived
}

// newSystem builds an actor system that logs protoactor's warnings and
// errors into the test log.
func newSystem(t testing.TB) *actor.ActorSystem {
	l := zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logx.Slog(l) }))
}

// raceSkip says why tests that start nodes do not run under -race: the
// race detector reports data races inside the pinned protoactor-go (gossip
// state written while the gossip actor marshals it, remote's shutdown flags,
// gRPC's global logger set by every remote start) on every run, none of them
// in this package. They run without -race: go test ./actors/cluster/.
const raceSkip = "protoactor-go's cluster, gossip and remote have data races of their own; run without -race: go test ./actors/cluster/"

// startNode starts one node; see startNodes.
func startNode(t testing.TB, cfg Config) *testNode {
	t.Helper()
	return startNodes(t, cfg)[0]
}

// startNodes starts nodes, each on a new actor system, concurrently (each
// start takes a second in protoactor's StartMember), and closes them when
// the test ends unless the test closed them.
func startNodes(t testing.TB, cfgs ...Config) []*testNode {
	t.Helper()
	if racecheck.Enabled {
		t.Skip(raceSkip)
	}
	out := make([]*testNode, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i, cfg := range cfgs {
		wg.Go(func() {
			system := newSystem(t)
			tn := &testNode{system: system, changed: make(chan struct{}, 1)}
			system.EventStream.Subscribe(func(evt any) {
				switch evt.(type) {
				case *MemberJoined, *MemberLeft:
					select {
					case tn.changed <- struct{}{}:
					default:
					}
				}
			})
			n, err := Start(system, cfg, zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)).Named(cfg.Bind.String()))
			tn.Node, errs[i] = n, err
			out[i] = tn
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("start %s: %v", cfgs[i].Bind, err)
		}
		t.Cleanup(out[i].Close)
	}
	return out
}

// closeNodes closes nodes concurrently.
func closeNodes(nodes ...*testNode) {
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(n.Close)
	}
	wg.Wait()
}

// waitMembers waits, on membership events, until every node sees exactly
// the members want.
func waitMembers(t testing.TB, nodes []*testNode, want ...*testNode) {
	t.Helper()
	var addrs []string
	for _, w := range want {
		addrs = append(addrs, w.Address())
	}
	waitMembersAt(t, nodes, addrs...)
}

// waitMembersAt waits, on membership events, until every node sees exactly
// the members at addrs.
func waitMembersAt(t testing.TB, nodes []*testNode, addrs ...string) {
	t.Helper()
	wantStr := strings.Join(sorted(addrs), ",")
	deadline := time.After(eventTimeout)
	for _, n := range nodes {
		for strings.Join(n.Members(), ",") != wantStr {
			select {
			case <-n.changed:
			case <-deadline:
				t.Fatalf("%s sees members [%s], want [%s]", n.Address(), strings.Join(n.Members(), ","), wantStr)
			}
		}
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// staticConfigs returns configurations for nodes at binds, each listing all
// binds as peers.
func staticConfigs(name string, binds ...netip.AddrPort) []Config {
	var out []Config
	for _, b := range binds {
		out = append(out, Config{Name: name, Bind: b, Peers: binds})
	}
	return out
}

// delivery is what a sink saw of one message.
type delivery struct {
	payloads []string
	key      Key
	listen   netip.AddrPort
	replyTo  *actor.PID // RemoteDatagrams only
	from     []netip.AddrPort
	reply    bool // a RemoteReplies
}

// sink is a stand-in for a session (or an ingress writer): it hands every
// batch it receives to a channel and releases it.
type sink struct {
	got chan delivery
}

func (s *sink) Receive(ctx actor.Context) {
	var b *udpio.Batch
	var d delivery
	switch m := ctx.Message().(type) {
	case *RemoteDatagrams:
		b, d.key, d.listen, d.replyTo = m.Batch, m.Key, m.Listen, m.ReplyTo
	case *RemoteReplies:
		b, d.key, d.listen, d.reply = m.Batch, m.Key, m.Listen, true
	default:
		return
	}
	for i := range b.Datagrams {
		d.payloads = append(d.payloads, string(b.Datagrams[i].Bytes()))
		d.from = append(d.from, b.Datagrams[i].Addr)
	}
	b.Release()
	s.got <- d
}

// spawnSink spawns a sink on n with a buffered channel.
func spawnSink(n *testNode, buffer int) (*actor.PID, chan delivery) {
	ch := make(chan delivery, buffer)
	pid := n.system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &sink{got: ch} }))
	return pid, ch
}

// clientID returns the key of a distinct non-zero client ID for i, on relay
// "test".
func clientID(i int) Key {
	return Key{Relay: "test", Client: wgproto.ClientID{0xc0, byte(i >> 8), byte(i)}}
}

// transport returns a WireGuard-shaped datagram of size bytes for the
// client of key, with tag written after the header so that each one is
// recognisable.
func transport(key Key, tag string, size int) []byte {
	b := make([]byte, size)
	b[0] = 4
	copy(b[1:4], key.Client[:])
	copy(b[16:], tag)
	return b
}

// batchOf builds a pooled batch of the payloads, from client address from.
func batchOf(from netip.AddrPort, payloads ...[]byte) *udpio.Batch {
	b := udpio.GetBatch()
	for _, p := range payloads {
		buf := udpio.GetBuffer()
		n := copy(buf[:], p)
		b.Add(udpio.Datagram{Buf: buf, N: n, Addr: from})
	}
	return b
}

// tagOf reads back the tag transport wrote.
func tagOf(payload string) string {
	s := payload[16:]
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	return s
}

// recv waits for the next delivery on ch.
func recv(t *testing.T, ch chan delivery) delivery {
	t.Helper()
	select {
	case got := <-ch:
		return got
	case <-time.After(eventTimeout):
		t.Fatal("no batch arrived")
		return delivery{}
	}
}

func zapNop() *zap.Logger { return zap.NewNop() }
