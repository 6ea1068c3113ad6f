package warptest

import (
	"context"
	"testing"
	"time"
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

func TestHandshakeAndBulkDownloadDirect(t *testing.T) {
	e := newEdge(t, 3)
	c := newClient(t, e, ClientConfig{ID: ClientID{0xa8, 0x1a, 0x15}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.WaitHandshake(ctx); err != nil {
		t.Fatal(err)
	}
	tr := c.Download(ctx, bulkSize, 1)
	res, err := tr.Wait(ctx, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d bytes in %v: %.0f Mbit/s", res.Bytes, res.Elapsed, res.Mbps())
}
