// Package writer is the actor that owns the writes to a listening socket:
// every reply to a client leaves through it. Sessions hand it batches of
// addressed datagrams; it gathers what its mailbox holds into batches of up
// to udpio.MaxBatch, sends each with one sendmmsg, and returns the buffers
// to the pool.
package writer

import (
	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/mailbox"
	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// Config is what a writer needs. The writer does not close Conn: the
// listener owns the socket's life.
type Config struct {
	Conn     *udpio.Conn
	Counters *stats.Counters
	Logger   *zap.Logger
}

// Props returns the props of a writer actor. It runs inline
// (mailbox.Inline) on the goroutine of the session that sends to it while
// it is idle, mostly its worker's poller loop, handing a session its
// replies. Replies from many sessions that
// queue up while a write is under way leave together in the next one. A
// restart would be harmless: the producer hands back the same Writer, stage
// and all.
func Props(cfg Config) *actor.Props {
	w := &Writer{cfg: cfg, stage: udpio.GetBatch()}
	counters := cfg.Counters
	bound := mailbox.Bound{Capacity: QueueBytes, Weigh: messages.Footprint, Drop: func(m any) {
		if b := messages.Datagrams(m); b != nil {
			counters.Drop(stats.QueueFull, len(b.Datagrams)) // counted in to_client by its session
			b.Release()
		}
	}}
	return actor.PropsFromProducer(func() actor.Actor { return w },
		actor.WithMailbox(mailbox.Bounded(bound, mailbox.OnEmpty(w.flush))), actor.WithDispatcher(mailbox.Inline()))
}

// QueueBytes bounds a writer's mailbox by the memory its batches hold
// (udpio.Batch.Footprint). Every session's replies to clients on one
// listening socket go through its writer, which runs inline in the session
// that finds it idle; while it writes (one sendmmsg of up to 64 datagrams,
// tens of microseconds), the replies of every other session queue. 4 MiB
// holds some 280 batches of one reply (as many sessions answering at once)
// or 29 full ones (1 856 replies); past it, a batch is dropped whole and
// its datagrams counted as queue_full.
const QueueBytes = 4 << 20

// Writer is the actor. stage holds replies not yet written; it is flushed
// when full and whenever the mailbox runs dry, so a reply waits only for
// the replies queued before it.
type Writer struct {
	cfg   Config
	stage *udpio.Batch
}

// Receive handles one message.
func (w *Writer) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.ClientReplies:
		b := m.Batch()
		for len(b.Datagrams) > 0 {
			w.stage.Take(b)
			if w.stage.Full() {
				w.flush()
			}
		}
		b.Release()
	case *messages.SocketSettings:
		// A reload's GSO switch, in the writer's turn: the flag is the
		// writing goroutine's. (The relay sets the buffers itself.)
		w.cfg.Conn.SetGSO(!m.NoGSO)
	case *actor.Stopping:
		w.flush()
	}
}

func (w *Writer) flush() {
	b := w.stage
	if len(b.Datagrams) == 0 {
		return
	}
	// The sessions counted these replies (ToClient) as they handed them
	// over; what the kernel refuses is counted here, as dropped.
	r := w.cfg.Conn.WriteAll(b)
	if r.Dropped > 0 {
		w.cfg.Counters.Drop(stats.ClientSendError, r.Dropped)
		w.cfg.Logger.Debug("send to client", zap.Error(r.Err))
	}
	b.Reset()
}
