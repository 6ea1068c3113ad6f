package main

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"
)

// echo --wg answers a handshake initiation as a WireGuard responder does:
// a response with the client ID echoed, a sender index of its own (a new
// one each time) and the initiation's sender index as receiver index.
// Everything else comes back as it was.
func TestEchoAnswersInitiations(t *testing.T) {
	e, err := startEchoServer("127.0.0.1:0", defaultSockBuf, 8, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.close() })
	c, err := net.DialUDP("udp", nil, e.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	id := clientIDFor(3)
	in := make([]byte, 2048)
	var senders []uint32
	for i, sender := range []uint32{77, 78} {
		init := make([]byte, initiationSize)
		putInitiation(init, id, sender)
		if _, err := c.Write(init); err != nil {
			t.Fatal(err)
		}
		n, err := c.Read(in)
		if err != nil {
			t.Fatal(err)
		}
		index, ok := responseTo(in[:n], id, sender)
		if !ok {
			t.Fatalf("initiation %d answered with %x, want a response to it", i, in[:n])
		}
		senders = append(senders, index)
	}
	if senders[0] == senders[1] {
		t.Errorf("two responses carry the sender index %d", senders[0])
	}
	tr := make([]byte, 64)
	putTransportHeader(tr, id, senders[1])
	if _, err := c.Write(tr); err != nil {
		t.Fatal(err)
	}
	n, err := c.Read(in)
	if err != nil || !bytes.Equal(in[:n], tr) {
		t.Fatalf("transport came back as %x (%v), want it unchanged", in[:n], err)
	}
	if rep := e.report(time.Second, 0); rep.Answered != 2 || rep.Sent != 3 {
		t.Errorf("report %+v: want 2 initiations answered of 3 sent", rep)
	}
}

// Plain clients send client ID zero, and their transports carry the index
// their handshake got: the responder's, or their own initiation's when it
// was echoed. Each run after the first starts with a new handshake, whose
// index tells its replies from an earlier run's.
func TestGenPlain(t *testing.T) {
	for _, wg := range []bool{false, true} {
		name := "echo"
		if wg {
			name = "echo --wg"
		}
		t.Run(name, func(t *testing.T) {
			e, err := startEchoServer("127.0.0.1:0", defaultSockBuf, 16, wg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { e.close() })
			cfg := genConfig{Clients: 2, Window: 8, Size: 64, Batch: 16, Duration: 200 * time.Millisecond,
				Warmup: 50 * time.Millisecond, Drain: time.Second, LossTimeout: time.Second, SockBuf: defaultSockBuf}
			cs, err := openClients(e.addr(), cfg.Clients, cfg.Batch, cfg.SockBuf, cfg.Size)
			if err != nil {
				t.Fatal(err)
			}
			defer cs.close()
			cs.setPlain(5 * time.Second)
			if err := cs.handshake(context.Background(), 5*time.Second); err != nil {
				t.Fatal(err)
			}
			first := map[uint32]bool{}
			for _, c := range cs.clients {
				if c.id != (clientID{}) || c.index == 0 || first[c.index] {
					t.Fatalf("client %d: ID %v, index %d; want zero and an index of its own", c.idx, c.id, c.index)
				}
				first[c.index] = true
			}
			for _, mode := range []string{"throughput", "pingpong"} {
				res, err := cs.run(context.Background(), mode, cfg, runHooks{})
				if err != nil {
					t.Fatal(err)
				}
				// Replies are matched by the index they carry (stale
				// otherwise): every one must be answered.
				if res.Answered == 0 || res.Bad+res.Foreign+res.Dup+res.Stale != 0 || res.LostTotal != 0 {
					t.Fatalf("%s: %+v", mode, res)
				}
			}
			for _, c := range cs.clients {
				if first[c.index] {
					t.Errorf("client %d kept index %d across runs: it did not hand-shake again", c.idx, c.index)
				}
			}
		})
	}
}
