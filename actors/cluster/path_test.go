package cluster

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/cluster/clusterpb"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// TestDatagramPath runs the cross-node datagram path on two nodes: A owns
// the sessions, B receives their clients' datagrams (a non-owner).
func TestDatagramPath(t *testing.T) {
	binds := []netip.AddrPort{freeBind(t), freeBind(t)}
	ab := startNodes(t, staticConfigs("path", binds...)...)
	a, b := ab[0], ab[1]
	waitMembers(t, ab, ab...)

	listen := netip.MustParseAddrPort("192.0.2.1:2408")
	client := netip.MustParseAddrPort("198.51.100.7:50000")
	client6 := netip.MustParseAddrPort("[2001:db8::7]:50001")

	t.Run("8x64 in flight through a non-owner", func(t *testing.T) {
		id := clientID(1)
		session, got := spawnSink(a, 64)
		if _, err := a.Register(id, session); err != nil {
			t.Fatal(err)
		}
		writer, _ := spawnSink(b, 1)
		owner := b.Lookup(id)
		if !samePID(owner, session) {
			t.Fatalf("B finds %v, want A's %v", owner, session)
		}
		const rounds, inFlight = 32, 8
		before := b.Stats()
		next := 0 // tag of the next datagram expected at the session
		for r := range rounds {
			for k := range inFlight {
				var ps [][]byte
				for i := range udpio.MaxBatch {
					ps = append(ps, transport(id, fmt.Sprint((r*inFlight+k)*udpio.MaxBatch+i), 200))
				}
				b.Forward(owner, id, listen, writer, batchOf(client, ps...))
			}
			for range inFlight {
				d := recv(t, got)
				if d.key != id || d.listen != listen || !samePID(d.replyTo, writer) || d.reply {
					t.Fatalf("delivery for %s from %v via %v, want %s from %v via %v", d.key, d.listen, d.replyTo, id, listen, writer)
				}
				for i, p := range d.payloads {
					if len(p) != 200 || d.from[i] != client || tagOf(p) != fmt.Sprint(next) {
						t.Fatalf("datagram %q of %d bytes from %v, want %d of 200 bytes from %v", tagOf(p), len(p), d.from[i], next, client)
					}
					next++
				}
			}
		}
		after := b.Stats()
		ps := peerStats(after, a.Address())
		ps0 := peerStats(before, a.Address())
		want := uint64(rounds * inFlight * udpio.MaxBatch)
		if ps.Forwarded-ps0.Forwarded != want || ps.DroppedFull != 0 || ps.DroppedLeft != 0 || ps.Unconfirmed != 0 {
			t.Fatalf("B's stats for A: %+v, want %d forwarded and no drops", ps, want)
		}
	})

	t.Run("replies back through the ingress node", func(t *testing.T) {
		id := clientID(3)
		writer, got := spawnSink(b, 4)
		a.Reply(writer, id, listen, batchOf(client6, transport(id, "r1", 92), transport(id, "r2", 148)))
		d := recv(t, got)
		if !d.reply || d.key != id || d.listen != listen || len(d.payloads) != 2 ||
			tagOf(d.payloads[0]) != "r1" || tagOf(d.payloads[1]) != "r2" || d.from[0] != client6 {
			t.Fatalf("reply delivery %+v", d)
		}
	})

	t.Run("a remote message above the old 4 MB limit arrives", func(t *testing.T) {
		// One Restore of about 5 MB to A's directory: gRPC's default limit
		// would drop the connection and the message with it.
		const entries = 5000
		pad := strings.Repeat("x", 1000)
		owner, _ := spawnSink(b, 1)
		m := &clusterpb.Restore{Replica: true}
		for i := range entries {
			m.Entries = append(m.Entries, &clusterpb.Entry{Identity: fmt.Sprint(pad, i), Pid: fromPID(owner)})
		}
		b.system.Root.Send(dirPID(a.Address()), m)
		res, err := b.system.Root.RequestFuture(dirPID(a.Address()), &clusterpb.Lookup{Identity: fmt.Sprint(pad, entries-1)}, eventTimeout).Result()
		if err != nil {
			t.Fatal(err)
		}
		if f := res.(*clusterpb.Found); f.Pid == nil || !samePID(toPID(f.Pid), owner) {
			t.Fatalf("the last entry of a 5 MB message: found %v, want %v", f.Pid, owner)
		}
	})

	t.Run("a burst of full batches arrives whole", func(t *testing.T) {
		// 64 batches of 64 full buffers (8.5 MB) sent at once, without the
		// link's window. Remote's writer packs what it has queued into one
		// gRPC message; how much that is depends on timing, so this shows
		// that full batches arrive, and TestRemoteLimits that no packing
		// can exceed the limit.
		id := clientID(4)
		session, got := spawnSink(a, 64)
		full := make([][]byte, udpio.MaxBatch)
		for i := range full {
			full[i] = transport(id, fmt.Sprint(i), udpio.BufferSize)
		}
		inboxA := actor.NewPID(a.Address(), inboxName)
		for range 64 {
			m := &clusterpb.Batch{Target: session.Id, Client: id.Client[:], Relay: id.Relay, Listen: make([]byte, addrSize)}
			bb := batchOf(client, full...)
			encodeBatch(m, bb)
			bb.Release()
			b.system.Root.Send(inboxA, m)
		}
		for range 64 {
			if d := recv(t, got); len(d.payloads) != udpio.MaxBatch || len(d.payloads[63]) != udpio.BufferSize {
				t.Fatalf("a batch of %d datagrams arrived, want %d full ones", len(d.payloads), udpio.MaxBatch)
			}
		}
	})

	t.Run("a batch for a session that is gone is dropped and counted", func(t *testing.T) {
		id := clientID(5)
		session, got := spawnSink(a, 4)
		dead := actor.NewPID(a.Address(), "no-such-session")
		before := a.Stats().DroppedGone
		b.Forward(dead, id, listen, nil, batchOf(client, transport(id, "lost", 64), transport(id, "lost", 64)))
		// The same link and inbox carry the next batch behind it.
		b.Forward(session, id, listen, nil, batchOf(client, transport(id, "after", 64)))
		if d := recv(t, got); tagOf(d.payloads[0]) != "after" {
			t.Fatalf("got %q, want the batch sent after", d.payloads)
		}
		if n := a.Stats().DroppedGone - before; n != 2 {
			t.Fatalf("A counted %d datagrams for a gone session, want 2", n)
		}
	})

	t.Run("a full queue drops and counts", func(t *testing.T) {
		// A peer that never acknowledges (nothing listens there): the link
		// sends a window's worth, queues as many, and drops the rest.
		// Batches of as many clients, which the queue cannot coalesce.
		nowhere := actor.NewPID(freeBind(t).String(), "session")
		const batches, perBatch = linkWindow + linkQueue + 36, 3
		for i := range batches {
			id := clientID(600 + i)
			b.Forward(nowhere, id, listen, nil, batchOf(client, transport(id, "x", 40), transport(id, "y", 40), transport(id, "z", 40)))
		}
		l := b.linkTo(nowhere.Address)
		if err := b.system.Root.PoisonFuture(l.pid).Wait(); err != nil {
			t.Fatal(err)
		}
		ps := l.stats.snapshot(nowhere.Address)
		b.dropLink(nowhere.Address)
		if ps.Batches != linkWindow || ps.DroppedFull != 36*perBatch || ps.DroppedLeft != linkQueue*perBatch {
			t.Fatalf("stats %+v, want %d batches sent, %d datagrams dropped full, %d dropped when stopped",
				ps, linkWindow, 36*perBatch, linkQueue*perBatch)
		}
	})
}

// TestQueueCoalesces: a client's small batches waiting behind a full window
// are merged into full ones, so the queue holds many more of its datagrams
// before it drops any.
func TestQueueCoalesces(t *testing.T) {
	nodes := startNodes(t, staticConfigs("coalesce", freeBind(t), freeBind(t))...)
	b := nodes[1]
	waitMembers(t, nodes, nodes...)
	client := netip.MustParseAddrPort("192.0.2.7:5000")
	listen := netip.MustParseAddrPort("203.0.113.1:2408")
	id := clientID(7)
	nowhere := actor.NewPID(freeBind(t).String(), "session")
	const batches, perBatch = linkWindow + 2*linkQueue, 3
	for range batches {
		b.Forward(nowhere, id, listen, nil, batchOf(client, transport(id, "x", 40), transport(id, "y", 40), transport(id, "z", 40)))
	}
	l := b.linkTo(nowhere.Address)
	if err := b.system.Root.PoisonFuture(l.pid).Wait(); err != nil {
		t.Fatal(err)
	}
	ps := l.stats.snapshot(nowhere.Address)
	b.dropLink(nowhere.Address)
	if queued := 2 * linkQueue * perBatch; ps.Batches != linkWindow || ps.DroppedFull != 0 || ps.DroppedLeft != uint64(queued) {
		t.Fatalf("stats %+v, want %d batches sent, none dropped full, %d dropped when stopped (queued in %d batches)",
			ps, linkWindow, queued, (queued+63)/64)
	}
}

// peerStats finds peer's entry.
func peerStats(s Stats, peer string) PeerStats {
	for _, p := range s.Peers {
		if p.Peer == peer {
			return p
		}
	}
	return PeerStats{Peer: peer}
}
