// Package listener is the actor that reads a listening UDP socket. Its
// reader goroutine reads datagrams in batches (one recvmmsg each) and sends
// every batch, as one message, to its target: the session supervisor of
// its worker.
//
// A relay of N workers listens on each address with a group of N sockets
// (udpio.Group), steered by client ID: worker i's listener reads socket i
// of every group, and its datagrams go to worker i's supervisor only.
package listener

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/mailbox"
	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// Config is what a listener needs. The listener reads Conn but does not
// close it: a listening socket is one of a group, which the relay closes
// whole (closing one socket of a steered group renumbers the others, and
// would send its clients to another worker).
type Config struct {
	Conn *udpio.Conn
	// Index is this socket's index among the relay's listening sockets;
	// batches carry it (udpio.Batch.Listener) so that replies leave by the
	// socket the client used.
	Index    uint8
	Target   *actor.PID // receives *messages.ClientDatagrams
	Counters *stats.Counters
	Logger   *zap.Logger
	// Backlog, if set, is the target's queued batches
	// (supervisor.Config.Backlog): while it is not zero, the listener
	// waits before it reads (see backoff).
	Backlog *mailbox.Backlog
}

// Props returns the props of a listener actor. It runs on protoactor's
// default dispatcher, not inline: its Stopping waits for its reader
// goroutine, which must not be the goroutine running it.
//
// A listener must not be restarted: it does not handle Restarting, so its
// reader would go on while the new instance started a second one on the
// same socket. Nothing in it fails; a relay that needs it back starts anew
// (actors/relay spawns it under a guardian that stops what fails).
func Props(cfg Config) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &Listener{cfg: cfg} })
}

// readErrorBackoff is the pause after an unexpected read error, so that a
// persistent one is logged (sampled) rather than spun on.
const readErrorBackoff = 10 * time.Millisecond

// While its target has batches queued, a listener waits backlogStep at a
// time, at most backlogWait in all, before it reads again.
const (
	backlogStep = 50 * time.Microsecond
	backlogWait = 5 * time.Millisecond
)

// Listener is the actor.
type Listener struct {
	cfg  Config
	done chan struct{}
	// stopping tells the reader that the read deadline its Stopping set
	// is the end, not a hiccup.
	stopping atomic.Bool
}

// Receive handles one message.
func (l *Listener) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		l.done = make(chan struct{})
		go l.read(ctx.ActorSystem().Root)
	case *actor.Stopping:
		// A read deadline in the past ends the reader, and the socket
		// stays open for its group; wait so that nothing is sent to the
		// target after the listener has stopped.
		l.stopping.Store(true)
		if err := l.cfg.Conn.SetReadDeadline(time.Unix(1, 0)); err != nil && !errors.Is(err, net.ErrClosed) {
			l.cfg.Logger.Warn("stop reading from clients", zap.Error(err))
		}
		if l.done != nil {
			<-l.done
		}
	}
}

func (l *Listener) read(root *actor.RootContext) {
	defer close(l.done)
	c := l.cfg.Conn
	for {
		l.backoff()
		b := udpio.GetBatch()
		if err := c.ReadBatch(b); err != nil {
			b.Release()
			if errors.Is(err, net.ErrClosed) || l.stopping.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			if !udpio.IsTransient(err) {
				// Not expected from a UDP socket; do not spin on it.
				l.cfg.Logger.Warn("read from clients", zap.Error(err))
				time.Sleep(readErrorBackoff)
			}
			continue
		}
		b.Trim() // a batch waiting in the supervisor's queue holds only what it carries
		bytes := 0
		for i := range b.Datagrams {
			bytes += b.Datagrams[i].N
		}
		l.cfg.Counters.Move(stats.FromClient, len(b.Datagrams), bytes)
		b.Listener = l.cfg.Index
		root.Send(l.cfg.Target, (*messages.ClientDatagrams)(b))
	}
}

// backoff waits, up to backlogWait, while the target has batches queued: it
// is running on another goroutine (the supervisor opening a session for a
// policy's answer, say), and a listener that went on reading meanwhile would
// queue the datagrams a few at a time, each batch costing 13 KB
// (udpio.BatchSize) of the target's bounded queue. Waiting, it leaves them
// in the socket's buffer and takes them in one full batch when the target
// is free. Past backlogWait it reads anyway, and the target's queue, then
// its bound (queue_full), takes over.
func (l *Listener) backoff() {
	for waited := time.Duration(0); waited < backlogWait && l.cfg.Backlog.Load() > 0; waited += backlogStep {
		time.Sleep(backlogStep)
	}
}
