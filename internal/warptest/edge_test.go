package warptest

import (
	"cmp"
	"context"
	"testing"
)

// newEdge starts an edge that the test closes.
func newEdge(t *testing.T, servers int) *Edge {
	t.Helper()
	e, err := NewEdge(EdgeConfig{Servers: servers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// newClient starts a client of e that the test closes.
func newClient(t *testing.T, e *Edge, cfg ClientConfig) *Client {
	t.Helper()
	c, err := e.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestHandshakeAndBulkTransfersDirect(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   ClientID
		mtu  int
	}{
		{"WARP client ID", ClientID{0xa8, 0x1a, 0x15}, 0},
		{"zero ID as plain WireGuard", ClientID{}, 0},
		{"MTU 1420, datagrams not a multiple of 16", ClientID{1, 4, 20}, 1420},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEdge(EdgeConfig{Servers: 3, MTU: tc.mtu})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { e.Close() })
			c := newClient(t, e, ClientConfig{ID: tc.id})
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			if err := c.WaitHandshake(ctx); err != nil {
				t.Fatal(err)
			}
			if err := c.Echo(ctx, []byte("hello through the tunnel")); err != nil {
				t.Fatal(err)
			}
			for i, tr := range []*Transfer{c.Download(ctx, bulkSize, 1), c.Upload(ctx, bulkSize, 2)} {
				res, err := tr.Wait(ctx, stallAfter)
				if err != nil {
					t.Fatalf("transfer %d: %v", i, err)
				}
				if res.Bytes != bulkSize {
					t.Errorf("%s of %d bytes reported %d", tr.Kind(), bulkSize, res.Bytes)
				}
				t.Logf("%s: %d bytes in %v: %.0f Mbit/s", tr.Kind(), res.Bytes, res.Elapsed, res.Mbps())
			}
			// The servers echo the ID back, and all of it went to one server.
			if b := c.Bind(); b.Received() == 0 || b.Foreign() != 0 {
				t.Errorf("client received %d datagrams, %d without its ID", b.Received(), b.Foreign())
			}
			// Full-size packets: MTU + 32 bytes, unpadded past the MTU.
			mtu := cmp.Or(tc.mtu, DefaultMTU)
			if got := e.Router().Largest(); got != mtu+32 {
				t.Errorf("largest datagram %d bytes, want %d", got, mtu+32)
			}
			src := e.Router().Sources()
			if st, ok := src[c.LocalAddr()]; len(src) != 1 || !ok || st.Datagrams < c.Bind().Sent()/2 {
				t.Errorf("router saw %v; client %v sent %d datagrams", src, c.LocalAddr(), c.Bind().Sent())
			}
		})
	}
}
