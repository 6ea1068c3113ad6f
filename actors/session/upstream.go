package session

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/metrics"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// The upstream side: the upstream's replies, on their way to the client.

// fromUpstream takes a batch the poller read: it asks roam where each reply
// goes, drops what has nowhere to go or is over the client's rate, and hands
// the rest to the writer of the listening socket the client uses.
func (s *Session) fromUpstream(ctx actor.Context, b *udpio.Batch) {
	now := time.Now()
	s.cfg.Stats.HeardUpstream(now)
	n, bytes := len(b.Datagrams), size(b)
	s.cfg.Counters.Move(stats.FromUpstream, n, bytes)
	s.cfg.Stats.Move(stats.FromUpstream, n, bytes)
	// Replies leave in batches by listening socket; almost always one.
	var out *udpio.Batch
	outBytes, answered := 0, 0
	for i := range b.Datagrams {
		d := &b.Datagrams[i]
		if d.Truncated { // larger than udpio.BufferSize: never forwarded cut short
			s.cfg.Counters.Drop(stats.Oversize, 1)
			continue // the buffer stays in b and is released with it
		}
		var h wgproto.Header
		if !s.cfg.Forward {
			h, _ = wgproto.Parse(d.Bytes())
		}
		switch h.Type {
		case wgproto.TypeResponse:
			s.timeHandshake(ctx, h.Receiver, now)
		case wgproto.TypeCookie:
			s.cookie(ctx, h.Index)
		}
		prev := s.peer.Addr()
		to, listener, moved, ok := s.peer.FromUpstream(now, h)
		if moved {
			s.roamed(ctx, prev)
		}
		if h.Type == wgproto.TypeResponse || h.Type == wgproto.TypeInitiation {
			s.roamChanged = true // a new index learned
			if s.cfg.Tracked && !s.peer.Forward {
				s.learned(ctx, h.Index) // before the reply that carries it leaves
			}
		}
		if !ok || !s.canReply(listener) {
			s.cfg.Counters.Drop(stats.NoPeer, 1)
			continue // the buffer stays in b and is released with it
		}
		if h.Type == wgproto.TypeTransport && s.limits != nil && !s.limits.down.Allow(now, d.N) {
			s.cfg.Counters.Drop(stats.ClientRate, 1)
			continue
		}
		if h.Type == wgproto.TypeResponse {
			answered++
		}
		if out != nil && out.Listener != listener {
			s.reply(ctx, out, outBytes)
			out = nil
		}
		if out == nil {
			out, outBytes = udpio.GetBatch(), 0
			out.Listener = listener
		}
		d.Addr = to
		if s.cfg.Tracked {
			s.unstamp(d)
		}
		outBytes += d.N
		out.Add(*d)
		d.Buf = nil
	}
	s.countHandshakes(metrics.HandshakeAnswered, answered) // before the replies leave, as every count
	if s.roamChanged {
		s.saveRoam() // before the replies leave: what the client has seen is in the saved state
	}
	if out != nil {
		s.reply(ctx, out, outBytes)
	}
	b.Release()
}

// reply hands a batch of replies to the writer of its listening socket. It
// counts them first, relay-wide and for the session alike: the writer may
// run inline and send them before Send returns, and a count must never be
// behind a datagram the client may already have.
func (s *Session) reply(ctx actor.Context, out *udpio.Batch, bytes int) {
	s.cfg.Counters.Move(stats.ToClient, len(out.Datagrams), bytes)
	s.cfg.Stats.Move(stats.ToClient, len(out.Datagrams), bytes)
	if out.Listener >= RemoteListenerBase {
		s.replyRemote(out)
		return
	}
	ctx.Send(s.cfg.Writers[out.Listener], (*messages.ClientReplies)(out))
}

// size is the total size of a batch's datagrams.
func size(b *udpio.Batch) int {
	n := 0
	for i := range b.Datagrams {
		n += b.Datagrams[i].N
	}
	return n
}
