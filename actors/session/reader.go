package session

import (
	"errors"
	"github.com/udpfwd/udpfwd/actors/cluster"
	"net"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// startReading starts reading the upstream's replies on c into the
// session; stopReading ends it. They are the one place that knows how
// replies are read (a goroutine per socket today), so that a session's
// start, its stop and a move to another endpoint (SwapUpstream) stay the
// same when a per-worker poller replaces the goroutine.
func (s *Session) startReading(ctx actor.Context, c *udpio.Conn) {
	if s.cfg.Readers != nil {
		s.cfg.Readers.Add(1)
	}
	go s.read(ctx.ActorSystem().Root, ctx.Self(), c)
}

// stopReading stops reading c and closes it: its reader ends by itself. It
// does not wait for the reader: with the inline dispatcher it may run on
// that reader's own goroutine (the relay waits for every reader when it
// closes).
func (s *Session) stopReading(c *udpio.Conn) { c.Close() }

// read is the session's reader goroutine for socket c: it reads the
// upstream's replies in batches and sends each to the session, which then
// runs inline on this goroutine (and the writer after it). Between bursts it
// waits without holding buffers, so an idle session costs a parked goroutine
// and nothing else. It ends when c is closed.
func (s *Session) read(root *actor.RootContext, self *actor.PID, c *udpio.Conn) {
	if s.cfg.Readers != nil {
		defer s.cfg.Readers.Done()
	}
	for {
		if err := c.WaitReadable(); err != nil {
			if s.readFailed(err) {
				return
			}
			continue
		}
		for {
			b := udpio.GetBatch()
			err := c.ReadBatch(b)
			if f := c.TakeForeign(); f > 0 {
				s.cfg.Counters.Drop(stats.ForeignSource, f)
			}
			if err != nil {
				b.Release()
				if s.readFailed(err) {
					return
				}
				break
			}
			b.Trim() // a batch waiting in the session's queue holds only what it carries
			n := len(b.Datagrams)
			if s.stopped.Load() {
				s.cfg.Counters.Drop(stats.SessionGone, n)
				b.Release()
				return
			}
			root.Send(self, (*messages.UpstreamDatagrams)(b))
			if n < udpio.MaxBatch {
				break // drained: wait again without buffers
			}
		}
	}
}

// dropQueued counts a batch that did not fit in the session's full mailbox
// (mailbox.Bound's Drop, on the sender's goroutine: the supervisor's for
// the client's datagrams, the reader's for replies) and releases it. The
// datagrams are counted as they arrived, as the session would have counted
// them, and as dropped.
func (s *Session) dropQueued(m any) {
	var b *udpio.Batch
	switch m := m.(type) {
	case *messages.ClientDatagrams:
		b = m.Batch()
		s.cfg.Stats.Move(stats.FromClient, len(b.Datagrams), size(b))
	case *messages.UpstreamDatagrams:
		b = m.Batch()
		s.cfg.Counters.Move(stats.FromUpstream, len(b.Datagrams), size(b))
		s.cfg.Stats.Move(stats.FromUpstream, len(b.Datagrams), size(b))
	case *cluster.RemoteDatagrams:
		b = m.Batch
		s.cfg.Stats.Move(stats.FromClient, len(b.Datagrams), size(b))
	default:
		return
	}
	s.cfg.Counters.Drop(stats.QueueFull, len(b.Datagrams))
	b.Release()
}

// readFailed reports whether the reader must end.
func (s *Session) readFailed(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return true
	}
	if udpio.IsTransient(err) {
		// An ICMP error for an earlier datagram (upstream port closed,
		// unreachable): the next datagram may go through.
		return false
	}
	s.cfg.Logger.Warn("read upstream", zap.Error(err))
	return true
}
