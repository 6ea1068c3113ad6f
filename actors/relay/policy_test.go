package relay_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap/zaptest"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// refuse is a policy actor that refuses one client ID.
func refuse(id wgproto.ClientID) policy.Factory {
	return func() *actor.Props {
		return actor.PropsFromFunc(func(ctx actor.Context) {
			if m, ok := ctx.Message().(*messages.AdmitSession); ok {
				if m.Client == id {
					ctx.Respond(&messages.SessionRefused{Client: m.Client, Reason: "test"})
					return
				}
				ctx.Respond(&messages.SessionAdmitted{Client: m.Client})
			}
		})
	}
}

func TestPolicyRefusesSession(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0", true)
	r, err := relay.Start(relayConfig(t, up.addr(), nil, "127.0.0.1:0"), zaptest.NewLogger(t),
		relay.WithPolicy(policy.Chain(policy.AllowAll, refuse(idA))))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := newClient(t, "127.0.0.1:0", r.ListenAddrs()[0])
	c.send(t, wgtest.Initiation(idA, 1))
	eventually(t, "the refusal to be counted", func() bool { return r.Counters().Dropped(stats.PolicyRefused) == 1 })
	allowed := wgtest.Initiation(idB, 2)
	c.send(t, allowed)
	if got := up.next(t); !bytes.Equal(got.data, allowed) {
		t.Fatal("the refused client's initiation reached the upstream")
	}
	if got := c.mustRecv(t); !bytes.Equal(got, allowed) {
		t.Fatal("the admitted client got no reply")
	}
	// The refused ID still has no session: its transport is dropped.
	c.send(t, wgtest.Transport(idA, 1, 0, 64))
	eventually(t, "the transport to be dropped", func() bool { return r.Counters().Dropped(stats.UnknownClient) == 1 })
	if _, ok := c.recv(20 * time.Millisecond); ok {
		t.Fatal("the refused client got a reply")
	}
}
