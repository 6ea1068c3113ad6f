package udpio

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestPollerForeignSources: a Conn whose peer is set but whose socket the
// kernel does not filter (as for datagrams queued before connect) has the
// other sources' datagrams counted in Ready.Foreign and left out of the
// batch, as ReadBatch does.
func TestPollerForeignSources(t *testing.T) {
	c, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	stranger, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	c.remote = peer.LocalAddr().(*net.UDPAddr).AddrPort()

	type seen struct {
		payloads []string
		foreign  int
	}
	ch := make(chan seen, 8)
	p, err := NewPoller(PollerConfig{}, func(r *Ready[int]) {
		var s seen
		s.foreign = r.Foreign
		if r.Batch != nil {
			for i := range r.Batch.Datagrams {
				s.payloads = append(s.payloads, string(r.Batch.Datagrams[i].Bytes()))
			}
			r.Batch.Release()
		}
		ch <- s
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	to := net.UDPAddrFromAddrPort(c.LocalAddr())
	stranger.WriteToUDP([]byte("forged"), to)
	peer.WriteToUDP([]byte("real"), to)
	// Both are queued before the socket is registered: one read takes them.
	if _, err := p.Add(c, 1); err != nil {
		t.Fatal(err)
	}
	var got seen
	deadline := time.After(5 * time.Second)
	for len(got.payloads) == 0 || got.foreign == 0 {
		select {
		case s := <-ch:
			got.payloads = append(got.payloads, s.payloads...)
			got.foreign += s.foreign
		case <-deadline:
			t.Fatalf("got %+v: want the peer's datagram and one foreign", got)
		}
	}
	if len(got.payloads) != 1 || got.payloads[0] != "real" || got.foreign != 1 {
		t.Fatalf("got %+v: want only %q, and 1 foreign datagram counted", got, "real")
	}
	if c.TakeForeign() != 0 {
		t.Fatal("the poller counted foreign datagrams on the Conn too: Ready.Foreign replaces TakeForeign")
	}
}
