package relay_test

import (
	"bytes"
	"testing"

	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// A datagram larger than the relay's buffers (udpio.BufferSize) is dropped
// and counted as oversize, from the upstream as from a client, never
// forwarded cut short; one of exactly udpio.BufferSize bytes, the largest
// relayed, goes through whole both ways. IPv4 and IPv6 loopback.
func TestOversizeDroppedBothWays(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "[::1]"} {
		t.Run(host, func(t *testing.T) {
			up := newUpstream(t, host+":0", false)
			r := startRelay(t, host+":0", up.addr(), 0)
			c := newClient(t, host+":0", r.ListenAddrs()[0])
			k := r.Counters()
			c.send(t, wgtest.Initiation(idA, 1))
			port := up.next(t).from

			largest := wgtest.Transport(idA, 7, 1, udpio.BufferSize)
			for _, size := range []int{3000, 65507} {
				up.sendTo(t, port, wgtest.Transport(idA, 7, 2, size))
			}
			up.sendTo(t, port, largest)
			if got := c.mustRecv(t); !bytes.Equal(got, largest) {
				t.Fatalf("the client's first reply (%d bytes, counter %x) is not the %d-byte one sent last: an oversize reply came through cut short", len(got), got[8:16], len(largest))
			}
			if got := k.Dropped(stats.Oversize); got != 2 {
				t.Fatalf("%d replies dropped as oversize, want 2", got)
			}

			for _, size := range []int{3000, 65507} {
				c.send(t, wgtest.Transport(idA, 7, 3, size))
			}
			c.send(t, largest)
			if got := up.next(t); !bytes.Equal(got.data, largest) {
				t.Fatalf("the upstream's next datagram (%d bytes, counter %x) is not the %d-byte one sent last: an oversize one came through cut short", len(got.data), got.data[8:16], len(largest))
			}
			if got := k.Dropped(stats.Oversize); got != 4 {
				t.Fatalf("%d datagrams dropped as oversize, want 4", got)
			}
			if got, over := k.TotalDropped(), k.Dropped(stats.Oversize); got != over {
				t.Errorf("%d dropped, %d of them as oversize: want no other drops", got, over)
			}
			if up, cl := k.Datagrams(stats.ToUpstream), k.Datagrams(stats.ToClient); up != 2 || cl != 1 {
				t.Errorf("%d datagrams sent upstream and %d to the client, want 2 (initiation, the largest) and 1", up, cl)
			}
		})
	}
}
