package warptest

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// peerSocket is a plain loopback socket that talks to a bind under test.
func peerSocket(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := listenLoopback(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	return c
}

func openBind(t *testing.T, b *StampBind) conn.ReceiveFunc {
	t.Helper()
	fns, port, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if len(fns) != 1 || port == 0 || b.LocalAddr().Port() != port {
		t.Fatalf("Open: %d functions, port %d, local address %v", len(fns), port, b.LocalAddr())
	}
	return fns[0]
}

// initiation is a datagram shaped like a handshake initiation.
func initiation() []byte {
	b := make([]byte, 148)
	for i := range b {
		b[i] = byte(i * 7)
	}
	b[0], b[1], b[2], b[3] = 1, 0, 0, 0
	return b
}

func receiveOne(t *testing.T, fn conn.ReceiveFunc) ([]byte, conn.Endpoint) {
	t.Helper()
	bufs := [][]byte{make([]byte, 2048)}
	sizes := []int{0}
	eps := []conn.Endpoint{nil}
	n, err := fn(bufs, sizes, eps)
	if err != nil || n != 1 {
		t.Fatalf("receive: %d, %v", n, err)
	}
	return bufs[0][:sizes[0]], eps[0]
}

func TestStampBindStampsAfterAndZeroesBefore(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   ClientID
	}{
		{"zero", ClientID{}},
		{"qBoV", ClientID{168, 26, 21}},
		{"all ones", ClientID{0xff, 0xff, 0xff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewStampBind(tc.id)
			recv := openBind(t, b)
			peer := peerSocket(t)
			peerAddr := localAddrPort(peer)
			ep, err := b.ParseEndpoint(peerAddr.String())
			if err != nil {
				t.Fatal(err)
			}

			msg := initiation()
			if err := b.Send([][]byte{bytes.Clone(msg)}, ep); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 2048)
			n, from, err := peer.ReadFromUDPAddrPort(got)
			if err != nil {
				t.Fatal(err)
			}
			got = got[:n]
			want := bytes.Clone(msg)
			copy(want[1:4], tc.id[:])
			if !bytes.Equal(got, want) {
				t.Errorf("sent % x\nwant % x", got[:8], want[:8])
			}
			if from != b.LocalAddr() {
				t.Errorf("sent from %v, want %v", from, b.LocalAddr())
			}

			// A reply that echoes the ID arrives with bytes 1..3 zeroed.
			reply := bytes.Clone(want)
			if _, err := peer.WriteToUDPAddrPort(reply, b.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			rx, rep := receiveOne(t, recv)
			if !bytes.Equal(rx, msg) {
				t.Errorf("received % x, want % x", rx[:8], msg[:8])
			}
			if rep.DstToString() != peerAddr.String() {
				t.Errorf("received from %s, want %v", rep.DstToString(), peerAddr)
			}
			if b.Foreign() != 0 || b.Received() != 1 || b.Sent() != 1 {
				t.Errorf("counters: foreign %d, received %d, sent %d", b.Foreign(), b.Received(), b.Sent())
			}

			// One that carries another ID is counted as foreign, and zeroed
			// too; a plain bind (the zero ID) leaves it for wireguard-go
			// to drop, as plain WireGuard does.
			other := bytes.Clone(msg)
			other[1] = tc.id[0] ^ 0x80
			if _, err := peer.WriteToUDPAddrPort(other, b.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			wantOther := msg
			if tc.id.IsZero() {
				wantOther = other
			}
			if rx, _ := receiveOne(t, recv); !bytes.Equal(rx, wantOther) {
				t.Errorf("received % x, want % x", rx[:8], wantOther[:8])
			}
			if b.Foreign() != 1 {
				t.Errorf("foreign = %d, want 1", b.Foreign())
			}
		})
	}
}

func TestStampBindRoamKeepsReceiving(t *testing.T) {
	b := NewStampBind(ClientID{9, 9, 9})
	recv := openBind(t, b)
	peer := peerSocket(t)
	ep, err := b.ParseEndpoint(localAddrPort(peer).String())
	if err != nil {
		t.Fatal(err)
	}
	old := b.LocalAddr()

	// A receive blocked on the old socket must carry on on the new one.
	type rx struct {
		data []byte
		err  error
	}
	got := make(chan rx, 1)
	go func() {
		bufs, sizes, eps := [][]byte{make([]byte, 2048)}, []int{0}, []conn.Endpoint{nil}
		_, err := recv(bufs, sizes, eps)
		got <- rx{bufs[0][:sizes[0]], err}
	}()

	rejected := 0
	moved, err := b.Roam(func(a netip.AddrPort) bool {
		if rejected < 2 {
			rejected++
			return false
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if rejected != 2 || moved == old || b.LocalAddr() != moved {
		t.Fatalf("roamed from %v to %v (bind says %v) after rejecting %d", old, moved, b.LocalAddr(), rejected)
	}
	if err := b.Send([][]byte{initiation()}, ep); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	_, from, err := peer.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	if from != moved {
		t.Errorf("after roaming, sent from %v, want %v", from, moved)
	}
	msg := initiation()
	if _, err := peer.WriteToUDPAddrPort(msg, moved); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.err != nil || !bytes.Equal(r.data, msg) {
			t.Errorf("receive across the roam: %v, % x", r.err, r.data)
		}
	case <-time.After(waitTimeout):
		t.Fatal("receive did not move to the new socket")
	}
}

func TestStampBindCloseEndsReceive(t *testing.T) {
	b := NewStampBind(ClientID{1, 1, 1})
	recv := openBind(t, b)
	errc := make(chan error, 1)
	go func() {
		bufs, sizes, eps := [][]byte{make([]byte, 2048)}, []int{0}, []conn.Endpoint{nil}
		_, err := recv(bufs, sizes, eps)
		errc <- err
	}()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("receive after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("receive still blocked after Close")
	}
	if _, err := b.Roam(nil); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Roam on a closed bind: %v, want net.ErrClosed", err)
	}
	// A bind can be opened again, as wireguard-go does on a port change.
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Open(0); !errors.Is(err, conn.ErrBindAlreadyOpen) {
		t.Errorf("second Open: %v, want ErrBindAlreadyOpen", err)
	}
}
