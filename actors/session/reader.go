package session

import (
	"errors"
	"net"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/cluster"
	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// The reader: the upstream's replies, read by the worker's poller and handed
// to the session.

// Poller is a worker's event loop for its sessions' upstream sockets
// (udpio.Poller): one goroutine waits on all of them with one epoll set and
// reads the ready ones in batches, so that a session costs no goroutine and
// an idle one no wake-up. Each session registers its socket in its Started
// and removes it in its Stopping, before it closes the socket.
type Poller = udpio.Poller[*Reader]

// NewPoller starts a worker's poller. Its loop hands every batch it reads to
// the session that registered the socket, as UpstreamDatagrams; the session
// runs inline on the loop's goroutine when it is idle, and the writer after
// it (actors/mailbox.Inline), so a reply crosses the relay without a
// goroutine hand-off. Close the poller once every session of the worker has
// stopped.
func NewPoller(root *actor.RootContext, cfg udpio.PollerConfig) (*Poller, error) {
	return udpio.NewPoller(cfg, func(r *udpio.Ready[*Reader]) { r.Owner.deliver(root, r) })
}

// Reader is a session's registration with its worker's Poller: what the
// poller's loop needs to hand the session its replies. It is the card's
// reader (reader → session → writer) without a goroutine of its own. Its
// fields are set before the socket is registered and never change, but
// stopped; the loop reads only the session's Counters and Logger, which
// never change either.
type Reader struct {
	self    *actor.PID
	session *Session
	// stopped is set by the session's Stopping before it removes its
	// registration: a batch the loop read just before is counted as
	// session_gone and released, not sent to a stopped actor.
	stopped atomic.Bool
}

// deliver is the poller's handler for one of the session's sockets, on the
// loop's goroutine.
func (rd *Reader) deliver(root *actor.RootContext, r *udpio.Ready[*Reader]) {
	if r.Foreign > 0 {
		rd.session.cfg.Counters.Drop(stats.ForeignSource, r.Foreign)
	}
	if err := r.Err; err != nil && !errors.Is(err, net.ErrClosed) && !udpio.IsTransient(err) {
		// Not expected from a UDP socket; the poller has dropped it, and
		// the session gets no more replies (it expires as silent).
		rd.session.cfg.Logger.Warn("read upstream", zap.Error(err))
	}
	b := r.Batch
	if b == nil {
		return
	}
	b.Trim() // a batch waiting in the session's queue holds only what it carries
	if rd.stopped.Load() {
		rd.session.cfg.Counters.Drop(stats.SessionGone, len(b.Datagrams))
		b.Release()
		return
	}
	root.Send(rd.self, (*messages.UpstreamDatagrams)(b))
}

// startReading registers c, the session's upstream socket, with its
// worker's poller; stopReading ends the registration and closes c. They
// are the one place that knows how replies are read, for a session's
// start, its stop and a move to another endpoint (SwapUpstream). A failure
// to register (the poller closed: the relay is closing) fails the session.
func (s *Session) startReading(ctx actor.Context, c *udpio.Conn) {
	s.reader.self, s.reader.session = ctx.Self(), s
	tok, err := s.cfg.Poller.Add(c, &s.reader)
	if err != nil {
		panic("session: read the upstream socket: " + err.Error())
	}
	s.polled = tok
}

// stopReading ends c's registration, then closes c: the poller reads it no
// more and starts no call for it. A batch the loop is handing over at this
// moment still reaches the session, or, once its Stopping set the reader
// stopped, is counted as session_gone. It does not wait for the loop: it
// may run on the loop's own goroutine.
func (s *Session) stopReading(c *udpio.Conn) {
	s.cfg.Poller.Remove(s.polled)
	c.Close()
}

// dropQueued counts a batch that did not fit in the session's full mailbox
// (mailbox.Bound's Drop, on the sender's goroutine: the supervisor's for
// the client's datagrams, the poller's for replies) and releases it. The
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
