package relay

import (
	"net/netip"
	"sync"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/admin"
	"github.com/udpfwd/udpfwd/internal/logx"
	"github.com/udpfwd/udpfwd/internal/stats"
)

// eventSubscription is the relay's subscription to its actor system's event
// stream: it logs the relay's session events and returns the buffers of
// batches that reached a stopped actor.
type eventSubscription struct {
	stream *eventstream.EventStream
	sub    *eventstream.Subscription
}

func (s *eventSubscription) close() { s.stream.Unsubscribe(s.sub) }

// subscribeLogger logs every lifecycle event of the relay called name, on
// l's audit logger (logx.Audit): an audit trail, never sampled; the
// admission budget bounds how fast sessions open, and so how fast lines
// come. A session that merely followed its client's newest address
// (ClientRoamed.Followed: no WireGuard evidence, so anyone who knows the
// client ID can make it move, as often as they like) is logged at debug
// on l itself, sampled. Events of other relays in the same system are left
// to them.
func subscribeLogger(system *actor.ActorSystem, name string, l *zap.Logger) *eventSubscription {
	audit := logx.Audit(l)
	sub := system.EventStream.Subscribe(func(evt any) {
		if e, ok := evt.(messages.SessionEvent); ok {
			if info := e.Info(); info.Relay == name {
				if r, ok := evt.(*messages.ClientRoamed); ok && r.Followed {
					logEvent(l, evt, info)
					return
				}
				logEvent(audit, evt, info)
			}
		}
	})
	return &eventSubscription{stream: system.EventStream, sub: sub}
}

// deadLetterSystems holds the actor systems whose dead letters are already
// handled, so that a batch is released exactly once however many relays
// share the system.
var deadLetterSystems sync.Map

// handleDeadLetters makes c count (and the pools get back) the batches that
// reach a stopped actor in system. The relay is built so that this does not
// happen (the supervisor forgets a session before stopping it, a session's
// reader drops what it read once the session has stopped, and Relay.Close
// stops senders before receivers); this is the safety net for a reader that
// read just as its session stopped. With
// several relays in one system the first one's counters get them.
func handleDeadLetters(system *actor.ActorSystem, c *stats.Counters) {
	if _, loaded := deadLetterSystems.LoadOrStore(system, true); loaded {
		return
	}
	system.EventStream.Subscribe(func(evt any) {
		if e, ok := evt.(*actor.DeadLetterEvent); ok {
			deadLetter(e, c)
		}
	})
}

func logEvent(l *zap.Logger, evt any, info messages.SessionInfo) {
	fields := []zap.Field{zap.Stringer("session", info.Session)}
	if info.Client.IsZero() {
		fields = append(fields, zap.String("client", "plain")) // a plain WireGuard client has no ID
	} else {
		fields = append(fields, zap.Stringer("client", info.Client), zap.String("client_b64", info.Client.Base64()))
	}
	fields = append(fields, addrField("client_addr", info.ClientAddr), zap.Uint16("upstream_port", info.UpstreamLocal.Port()))
	switch e := evt.(type) {
	case *messages.SessionOpened:
		l.Info("session opened", append(fields, addrField("upstream", info.Upstream))...)
	case *messages.ClientRoamed:
		if e.Followed {
			l.Debug("client followed to a new address", append(fields, addrField("from", e.From))...)
			return
		}
		l.Info("client roamed", append(fields, addrField("from", e.From))...)
	case *messages.SessionExpired:
		l.Info("session expired", append(fields, zap.String("silent", e.Side), zap.Duration("idle_timeout", e.Timeout))...)
	case *messages.SessionFailed:
		l.Error("session failed", append(fields, zap.String("reason", e.Reason))...)
	case *messages.SessionClosed:
		l.Info("session closed", fields...)
	case *messages.SessionRestored:
		if e.Rebound {
			l.Warn("session restored on a new upstream port: the upstream sees a new 4-tuple", append(fields,
				addrField("wanted", e.Wanted), zap.String("error", e.Err))...)
		} else {
			l.Info("session restored", fields...)
		}
	}
}

// addrField logs an address as people read it: a v4 client on a
// dual-stack socket as 127.0.0.1:5000, not [::ffff:127.0.0.1]:5000, as
// /sessions shows it.
func addrField(key string, a netip.AddrPort) zap.Field {
	return zap.String(key, admin.AddrString(a))
}

// deadLetter counts a batch that reached an actor after it stopped and
// returns its buffers.
func deadLetter(e *actor.DeadLetterEvent, c *stats.Counters) {
	if b := messages.Datagrams(e.Message); b != nil {
		c.Drop(stats.SessionGone, len(b.Datagrams))
		b.Release()
	}
}
