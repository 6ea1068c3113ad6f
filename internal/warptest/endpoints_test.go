package warptest

import (
	"context"
	"testing"
	"time"
)

// An edge with two endpoints: the same servers answer through either
// router, replies leave by the router a datagram came by, and a dark
// router swallows everything, handshakes included, until the client turns
// to the other endpoint.
func TestEdgeEndpoints(t *testing.T) {
	e, err := NewEdge(EdgeConfig{Servers: 2, Endpoints: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	eps := e.Endpoints()
	if len(eps) != 2 || eps[0] != e.Addr() || eps[0] == eps[1] || len(e.Routers()) != 2 {
		t.Fatalf("endpoints %v, routers %d", eps, len(e.Routers()))
	}
	c := newClient(t, e, ClientConfig{ID: ClientID{7, 7, 7}, Endpoint: eps[1], KeepEndpoint: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.WaitHandshake(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Echo(ctx, []byte("through the second endpoint")); err != nil {
		t.Fatal(err)
	}
	if from := c.Bind().ReceivedFrom(); from[eps[1]] == 0 || from[eps[0]] != 0 || c.Bind().LastFrom() != eps[1] {
		t.Fatalf("received from %v, last from %v; want only %v", from, c.Bind().LastFrom(), eps[1])
	}

	e.Routers()[1].SetDark(true)
	if err := c.Rehandshake(ctxFor(ctx, time.Second)); err == nil {
		t.Fatal("a handshake completed through a dark endpoint")
	}
	if len(e.Routers()[1].Swallowed()) == 0 {
		t.Fatal("the dark router swallowed no initiation")
	}
	if err := c.SetEndpoint(eps[0]); err != nil {
		t.Fatal(err)
	}
	if err := c.Rehandshake(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Echo(ctx, []byte("through the first endpoint")); err != nil {
		t.Fatal(err)
	}
	if c.Bind().LastFrom() != eps[0] {
		t.Fatalf("last reply from %v, want %v", c.Bind().LastFrom(), eps[0])
	}
}

// ctxFor is ctx bounded to d more.
func ctxFor(ctx context.Context, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(ctx, d)
	context.AfterFunc(c, cancel)
	return c
}
