package session

import (
	"encoding/binary"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/internal/metrics"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// The client side: datagrams from the client, on their way upstream.

// fromClient takes a batch the supervisor routed to the session: it lets
// roam see each datagram, drops what the session's limits refuse, and
// stages the rest for the next sendmmsg upstream.
func (s *Session) fromClient(ctx actor.Context, b *udpio.Batch) {
	now := time.Now()
	// Counted as they arrive, as the listener counted them relay-wide.
	s.cfg.Stats.Move(stats.FromClient, len(b.Datagrams), size(b))
	k, heard, initiations := 0, false, 0
	for i := range b.Datagrams {
		d := &b.Datagrams[i]
		var h wgproto.Header
		deviating := false
		if !s.cfg.Forward {
			// The supervisor has checked it: anything but well-formed
			// WireGuard (with or without an ID) came through message_types: any.
			var v wgproto.Verdict
			h, v = wgproto.Parse(d.Bytes())
			deviating = v != wgproto.OK && v != wgproto.ZeroClient
		}
		// A forward has no client until its first datagram.
		if from := s.peer.Addr(); s.fromPeer(now, h, d, b.Listener) || !from.IsValid() {
			s.roamed(ctx, from)
		}
		confirmed := s.cfg.Forward || s.peer.Confirmed(d.Addr, b.Listener)
		if deviating && confirmed {
			s.deviated()
		}
		// Only the client itself keeps the session alive: datagrams anyone
		// can send with its ID do not.
		heard = heard || confirmed
		if reason, drop := s.limitFromClient(now, h, d, confirmed); drop {
			s.cfg.Counters.Drop(reason, 1)
			continue // the buffer stays in b and is released with it
		}
		if h.Type == wgproto.TypeInitiation {
			initiations++
			s.handshakes.forwarded(h.Index, now)
			if s.initiation(ctx, now, d, b.Listener, confirmed) {
				d.Buf = nil // held while the session asks to move (failover.go)
				continue
			}
		}
		if s.cfg.Tracked {
			s.stamp(d)
		}
		b.Datagrams[i], b.Datagrams[k] = b.Datagrams[k], b.Datagrams[i]
		k++
	}
	b.Datagrams = b.Datagrams[:k]
	s.countHandshakes(metrics.HandshakeForwarded, initiations)
	if heard {
		s.cfg.Stats.HeardClient(now)
	}
	if s.roamChanged {
		s.saveRoam()
	}
	if s.stage == nil {
		// The common case: nothing staged, so this batch becomes the stage.
		s.stage = b
		if s.stage.Full() {
			s.flush()
		}
		return
	}
	for len(b.Datagrams) > 0 {
		if s.stage == nil {
			s.stage = udpio.GetBatch()
		}
		s.stage.Take(b)
		if s.stage.Full() {
			s.flush()
		}
	}
	b.Release()
}

// fromPeer lets roam see a datagram from the client: a transport message
// with its counter, so that one overtaken on its way cannot move the
// session back to an address the client has left.
func (s *Session) fromPeer(now time.Time, h wgproto.Header, d *udpio.Datagram, listener uint8) bool {
	if h.Type == wgproto.TypeTransport && d.N >= wgproto.MinTransportSize {
		return s.peer.FromTransport(now, h, binary.LittleEndian.Uint64(d.Buf[8:16]), d.Addr, listener)
	}
	return s.peer.FromClient(now, h, d.Addr, listener)
}

// flush writes the staged datagrams upstream with one sendmmsg. They are
// counted as they are handed to the kernel, relay-wide and for the session
// alike; those the kernel refuses are counted as dropped too.
func (s *Session) flush() {
	b := s.stage
	if b == nil {
		return
	}
	s.stage = nil
	defer b.Release()
	bytes := size(b)
	s.cfg.Counters.Move(stats.ToUpstream, len(b.Datagrams), bytes)
	s.cfg.Stats.Move(stats.ToUpstream, len(b.Datagrams), bytes)
	w := s.cfg.Conn.WriteAll(b)
	if w.Dropped > 0 {
		s.cfg.Counters.Drop(stats.UpstreamSendError, w.Dropped)
		s.debug("send upstream", zap.Error(w.Err))
	}
}

// limitFromClient decides whether a datagram from the client may go on.
// From an address the session has not confirmed: a transport message is
// dropped (one with a learned index would have confirmed the address, so
// this one cannot be the client's), and anything else — a handshake from a
// client on a new network — gets a small budget per source address, so
// that nobody who knows the client ID can spend the client's. From the
// confirmed address, transport data is held to the client's rate limit;
// handshakes never are: a client over its limit must still be able to
// re-key.
func (s *Session) limitFromClient(now time.Time, h wgproto.Header, d *udpio.Datagram, confirmed bool) (stats.Reason, bool) {
	if s.cfg.Forward {
		return 0, false
	}
	if !confirmed {
		if h.Type == wgproto.TypeTransport {
			return stats.UnconfirmedTransport, true
		}
		if !s.allowUnconfirmed(now, d.Addr.Addr(), d.N) {
			return stats.UnconfirmedRate, true
		}
		return 0, false
	}
	if h.Type == wgproto.TypeTransport && s.limits != nil && !s.limits.up.Allow(now, d.N) {
		return stats.ClientRate, true
	}
	return 0, false
}
