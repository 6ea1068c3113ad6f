package relay

import (
	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
)

// subscribeEndpointLogger logs the events of the relay called name's pool
// of upstream endpoints: an endpoint marked down or up again, and a session
// that moved off one. Events of other relays in the same system are left
// to them.
func subscribeEndpointLogger(system *actor.ActorSystem, name string, l *zap.Logger) *eventSubscription {
	sub := system.EventStream.Subscribe(func(evt any) {
		switch e := evt.(type) {
		case *messages.SessionMoved:
			if e.Relay == name {
				l.Warn("session moved to another upstream endpoint: its endpoint did not answer its handshakes",
					zap.Stringer("session", e.Session), zap.Stringer("client", e.Client), zap.String("client_b64", e.Client.Base64()),
					addrField("client_addr", e.ClientAddr), zap.String("from", e.FromEndpoint), addrField("from_upstream", e.FromUpstream),
					zap.Uint16("from_upstream_port", e.FromUpstreamLocal.Port()), zap.String("endpoint", e.Endpoint),
					addrField("upstream", e.Upstream), zap.Uint16("upstream_port", e.UpstreamLocal.Port()),
					zap.Int("unanswered", e.Unanswered))
			}
		case *messages.EndpointDown:
			if e.Relay == name {
				l.Warn("upstream endpoint down: new sessions skip it, its sessions move as their handshakes go unanswered",
					zap.String("endpoint", e.Endpoint), addrField("addr", e.Addr), zap.Int("unanswered_in_a_row", e.Unanswered),
					zap.Duration("retry_in", e.RetryIn))
			}
		case *messages.EndpointUp:
			if e.Relay == name {
				l.Info("upstream endpoint up again", zap.String("endpoint", e.Endpoint), addrField("addr", e.Addr),
					zap.Duration("rtt", e.RTT), zap.Duration("down_for", e.DownFor))
			}
		}
	})
	return &eventSubscription{stream: system.EventStream, sub: sub}
}
