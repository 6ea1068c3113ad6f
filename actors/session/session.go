// Package session is the actor that owns one client's session: its upstream
// socket (the stable source port the upstream's ECMP hash sees), its client
// address, and its idle deadline.
//
// Datagram flow: the supervisor sends ClientDatagrams; the session writes
// them upstream with one sendmmsg and returns the buffers. A reader
// goroutine reads the upstream's replies in batches and sends them to the
// session as UpstreamDatagrams; the session addresses them to the client and
// hands them to the writer as ClientReplies.
package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/mailbox"
	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/roam"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Config is what a session needs. The session takes ownership of Conn.
type Config struct {
	Info messages.SessionInfo
	// Conn is the session's upstream socket, connected to the upstream.
	Conn *udpio.Conn
	// Writers send replies to clients, one per listening socket of the
	// relay, indexed by udpio.Batch.Listener.
	Writers []*actor.PID
	// Listener is the index of the listening socket the session's first
	// datagram came by.
	Listener uint8
	// IdleTimeout ends the session when either direction has been silent
	// for this long. Zero means never (static forward mode).
	IdleTimeout time.Duration
	// Forward is the relay's forward mode: no WireGuard parsing, the
	// session forwards any datagram and replies follow the newest client
	// address (roam.Peer.Forward).
	Forward  bool
	Counters *stats.Counters
	// Stats is this session's own record, read by the session API.
	Stats *stats.Session
	// Readers, if set, counts the session's reader goroutine, so that the
	// relay can wait for every reader to end when it closes.
	Readers *sync.WaitGroup
	// Roam is roaming state saved by an earlier run, to restore.
	Roam   []byte
	Logger *zap.Logger
}

// Validate reports a missing dependency.
func (c *Config) Validate() error {
	switch {
	case c.Conn == nil:
		return errors.New("session: no upstream socket")
	case len(c.Writers) == 0:
		return errors.New("session: no writer")
	case c.Counters == nil || c.Stats == nil:
		return errors.New("session: no counters")
	case c.Logger == nil:
		return errors.New("session: no logger")
	}
	return nil
}

// Props returns the props of a session actor. The session must not be
// restarted (its socket is closed when it stops): supervise it with a
// strategy that stops failed children. Datagrams that queue up for it while
// it writes leave together in its next sendmmsg.
func Props(cfg Config) *actor.Props {
	s := &Session{cfg: cfg}
	return actor.PropsFromProducer(func() actor.Actor { return s },
		actor.WithMailbox(mailbox.Unbounded(mailbox.OnEmpty(s.flush))), actor.WithDispatcher(mailbox.Inline()))
}

// checkIdle is the one CheckIdle message every timer sends.
var checkIdle = &messages.CheckIdle{}

// Session is the actor. Only the goroutine processing its mailbox touches
// its fields, except stopped, which the reader goroutine reads.
type Session struct {
	cfg  Config
	peer roam.Peer
	// stage holds the client's datagrams not yet written upstream; it is
	// flushed when full and whenever the mailbox runs dry, and given back
	// to the pool then, so that an idle session holds no batch.
	stage *udpio.Batch

	lastClient, lastUpstream time.Time
	timer                    *time.Timer
	idleSent                 bool

	// up and down hold the client to the rate its policy pushed
	// (ApplyLimits), each direction apart; unconfirmed budgets what comes
	// from client addresses the session has not confirmed (roam package),
	// each source apart.
	up, down    limits.Limiter
	unconfirmed unconfirmedBudgets
	// roamSaved is false when the roaming state changed since it was last
	// handed to Stats for saving.
	roamSaved bool

	// stopped is set before the socket is closed, so that a batch the
	// reader read just before is released instead of sent to a stopped
	// actor.
	stopped atomic.Bool
}

// Receive handles one message.
func (s *Session) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.ClientDatagrams:
		s.fromClient(ctx, m.Batch())
	case *messages.UpstreamDatagrams:
		s.fromUpstream(ctx, m.Batch())
	case *messages.CheckIdle:
		s.checkIdle(ctx)
	case *messages.ApplyLimits:
		now := time.Now()
		s.up.Set(m.Limits(), now)
		s.down.Set(m.Limits(), now)
	case *messages.Crash:
		panic(fmt.Sprintf("session %s: injected crash: %s", s.cfg.Info.Session, m.Reason))
	case *actor.Started:
		s.start(ctx)
	case *actor.Stopping:
		s.stop()
	}
}

func (s *Session) start(ctx actor.Context) {
	now := time.Now()
	s.lastClient, s.lastUpstream = now, now
	s.peer.Forward = s.cfg.Forward
	s.restoreRoam(now)
	s.saveRoam()
	if s.cfg.Readers != nil {
		s.cfg.Readers.Add(1)
	}
	go s.read(ctx.ActorSystem().Root, ctx.Self())
	if s.cfg.IdleTimeout > 0 {
		root, self := ctx.ActorSystem().Root, ctx.Self()
		s.timer = time.AfterFunc(s.cfg.IdleTimeout, func() { root.Send(self, checkIdle) })
	}
}

// stop closes the socket, which ends the reader. It does not wait for the
// reader: with the inline dispatcher stop may run on the reader's own
// goroutine. The relay waits for every reader (Config.Readers) when it
// closes.
func (s *Session) stop() {
	if s.timer != nil {
		s.timer.Stop()
	}
	s.flush()
	s.stopped.Store(true)
	s.cfg.Conn.Close()
}

// restoreRoam brings back roaming state saved by an earlier run, or starts
// from the address that opened the session.
func (s *Session) restoreRoam(now time.Time) {
	if len(s.cfg.Roam) > 0 {
		var st roam.State
		err := json.Unmarshal(s.cfg.Roam, &st)
		if err == nil {
			err = s.peer.Restore(st)
		}
		if err == nil {
			return
		}
		s.cfg.Logger.Warn("saved roaming state not restored", zap.Error(err))
	}
	s.peer.FromClient(now, wgproto.Header{}, s.cfg.Info.ClientAddr, s.cfg.Listener)
}

// saveRoam hands the roaming state to Stats, from which the state file is
// written. It runs when the state changed: on a handshake or a roam.
func (s *Session) saveRoam() {
	if s.cfg.Forward {
		return
	}
	b, err := json.Marshal(s.peer.State())
	if err != nil {
		s.cfg.Logger.Warn("encode roaming state", zap.Error(err))
		return
	}
	s.cfg.Stats.SetSaved(b)
	s.roamSaved = true
}

func (s *Session) fromClient(ctx actor.Context, b *udpio.Batch) {
	now := time.Now()
	bytes, k := 0, 0
	for i := range b.Datagrams {
		d := &b.Datagrams[i]
		bytes += d.N
		var h wgproto.Header
		if !s.cfg.Forward {
			h, _ = wgproto.Parse(d.Bytes()) // the supervisor has checked it
		}
		if from := s.peer.Addr(); s.peer.FromClient(now, h, d.Addr, b.Listener) {
			s.roamed(ctx, from)
		}
		confirmed := s.cfg.Forward || s.peer.Confirmed(d.Addr, b.Listener)
		if confirmed {
			// Only the client itself keeps the session alive: datagrams
			// anyone can send with its ID do not.
			s.lastClient = now
		}
		if reason, drop := s.limitFromClient(now, h, d, confirmed); drop {
			s.cfg.Counters.Drop(reason, 1)
			continue // the buffer stays in b and is released with it
		}
		b.Datagrams[i], b.Datagrams[k] = b.Datagrams[k], b.Datagrams[i]
		k++
	}
	b.Datagrams = b.Datagrams[:k]
	if !s.roamSaved {
		s.saveRoam()
	}
	s.cfg.Stats.Move(stats.FromClient, len(b.Datagrams), bytes, now)
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

// flush writes the staged datagrams upstream with one sendmmsg.
func (s *Session) flush() {
	b := s.stage
	if b == nil {
		return
	}
	s.stage = nil
	defer b.Release()
	w := s.cfg.Conn.WriteAll(b)
	if w.Dropped > 0 {
		s.cfg.Counters.Drop(stats.UpstreamSendError, w.Dropped)
		s.cfg.Logger.Debug("send upstream", zap.Error(w.Err))
	}
	s.cfg.Counters.Move(stats.ToUpstream, w.Sent, w.Bytes)
	s.cfg.Stats.Move(stats.ToUpstream, w.Sent, w.Bytes, time.Now())
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
		if !s.unconfirmed.allow(now, d.Addr.Addr(), d.N) {
			return stats.UnconfirmedRate, true
		}
		return 0, false
	}
	if h.Type == wgproto.TypeTransport && !s.up.Allow(now, d.N) {
		return stats.ClientRate, true
	}
	return 0, false
}

func (s *Session) roamed(ctx actor.Context, from netip.AddrPort) {
	s.roamSaved = false
	info := s.info()
	s.cfg.Stats.SetClientAddr(info.ClientAddr)
	s.cfg.Counters.Count(stats.ClientRoamed)
	s.cfg.Logger.Debug("client roamed", zap.Stringer("from", from), zap.Stringer("to", info.ClientAddr))
	ctx.ActorSystem().EventStream.Publish(&messages.ClientRoamed{SessionInfo: info, From: from})
}

func (s *Session) fromUpstream(ctx actor.Context, b *udpio.Batch) {
	now := time.Now()
	s.lastUpstream = now
	bytes := 0
	for i := range b.Datagrams {
		bytes += b.Datagrams[i].N
	}
	s.cfg.Counters.Move(stats.FromUpstream, len(b.Datagrams), bytes)
	s.cfg.Stats.Move(stats.FromUpstream, len(b.Datagrams), bytes, now)
	replies, replyBytes := 0, 0
	// Replies leave in batches by listening socket; almost always one.
	var out *udpio.Batch
	for i := range b.Datagrams {
		d := &b.Datagrams[i]
		var h wgproto.Header
		if !s.cfg.Forward {
			h, _ = wgproto.Parse(d.Bytes())
		}
		prev := s.peer.Addr()
		to, via, moved, ok := s.peer.FromUpstream(now, h)
		if moved {
			s.roamed(ctx, prev)
		}
		if h.Type == wgproto.TypeResponse || h.Type == wgproto.TypeInitiation {
			s.roamSaved = false // a new index learned
		}
		if !ok || int(via) >= len(s.cfg.Writers) {
			s.cfg.Counters.Drop(stats.NoPeer, 1)
			continue // the buffer stays in b and is released with it
		}
		if h.Type == wgproto.TypeTransport && !s.down.Allow(now, d.N) {
			s.cfg.Counters.Drop(stats.ClientRate, 1)
			continue
		}
		if out != nil && out.Listener != via {
			ctx.Send(s.cfg.Writers[out.Listener], (*messages.ClientReplies)(out))
			out = nil
		}
		if out == nil {
			out = udpio.GetBatch()
			out.Listener = via
		}
		d.Addr = to
		replies++
		replyBytes += d.N
		out.Add(*d)
		d.Buf = nil
	}
	if out != nil {
		ctx.Send(s.cfg.Writers[out.Listener], (*messages.ClientReplies)(out))
	}
	s.cfg.Stats.Move(stats.ToClient, replies, replyBytes, now)
	if !s.roamSaved {
		s.saveRoam()
	}
	b.Release()
}

func (s *Session) checkIdle(ctx actor.Context) {
	if s.idleSent || s.cfg.IdleTimeout <= 0 {
		return
	}
	now := time.Now()
	side, last := "client", s.lastClient
	if s.lastUpstream.Before(last) {
		side, last = "upstream", s.lastUpstream
	}
	if wait := last.Add(s.cfg.IdleTimeout).Sub(now); wait > 0 {
		s.timer.Reset(wait)
		return
	}
	s.idleSent = true
	ctx.Send(ctx.Parent(), &messages.SessionIdle{Session: s.info(), Side: side})
}

func (s *Session) info() messages.SessionInfo {
	info := s.cfg.Info
	info.ClientAddr = s.peer.Addr()
	return info
}

// read is the reader goroutine. Between bursts it waits without holding
// buffers, so an idle session costs a parked goroutine and nothing else.
func (s *Session) read(root *actor.RootContext, self *actor.PID) {
	if s.cfg.Readers != nil {
		defer s.cfg.Readers.Done()
	}
	c := s.cfg.Conn
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
			n := len(b.Datagrams)
			if s.stopped.Load() {
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
