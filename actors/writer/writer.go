// Package writer is the actor that owns the writes to a listening socket:
// every reply to a client leaves through it. Sessions hand it batches of
// addressed datagrams; it sends each batch with one sendmmsg and returns the
// buffers to the pool.
package writer

import (
	"errors"
	"net"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

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

// Props returns the props of a writer actor.
func Props(cfg Config) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &Writer{cfg: cfg} })
}

// Writer is the actor.
type Writer struct {
	cfg Config
}

// Receive handles one message.
func (w *Writer) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.ClientReplies:
		w.write(m.Batch())
	}
}

func (w *Writer) write(b *udpio.Batch) {
	bytes := 0
	for i := range b.D {
		bytes += b.D[i].N
	}
	sent, failed, err := w.cfg.Conn.WriteBatch(b, b.D)
	if failed > 0 {
		bytes = 0 // which ones failed is not known; count datagrams only
		w.cfg.Counters.Drop(stats.ClientSendError, failed)
		w.cfg.Logger.Debug("send to client", zap.Error(err))
	}
	if err != nil && errors.Is(err, net.ErrClosed) {
		w.cfg.Counters.Drop(stats.ClientSendError, len(b.D)-sent-failed)
	}
	w.cfg.Counters.Move(stats.ToClient, sent, bytes)
	b.Release()
}
