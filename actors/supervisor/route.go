package supervisor

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// routeContext is the part of actor.Context that routing uses, so that
// routing can be tested and measured without an actor system.
type routeContext interface {
	Send(pid *actor.PID, message any)
	Spawn(props *actor.Props) *actor.PID
	Request(pid *actor.PID, message any)
	Stop(pid *actor.PID)
}

// route splits a read batch into one batch per session and sends each.
func (s *Supervisor) route(ctx routeContext, in *udpio.Batch) {
	if s.cfg.Mode == ModeForward {
		s.routeForward(ctx, in)
		return
	}
	s.batchNow = time.Time{}
	if s.cfg.Cluster != nil {
		s.checkRemotes()
	}
	for i := range in.Datagrams {
		d := &in.Datagrams[i]
		if d.Truncated {
			s.drops[stats.Oversize]++
			continue
		}
		h, v := wgproto.Parse(d.Bytes())
		var e *entry
		switch v {
		case wgproto.OK:
			e = s.byClient(ctx, h, d, in.Listener)
		case wgproto.ZeroClient:
			e = s.byIndex(ctx, h, d, in.Listener)
		default:
			e = s.deviating(ctx, h, v, d, in.Listener)
		}
		if e == nil {
			continue
		}
		if e.out == nil {
			e.out = udpio.GetBatch()
			e.out.Listener = in.Listener
			s.touched = append(s.touched, e)
		}
		e.out.Add(*d)
		d.Buf = nil // moved
		if e.out.Full() {
			ctx.Send(e.pid, (*messages.ClientDatagrams)(e.out))
			e.out = udpio.GetBatch()
			e.out.Listener = in.Listener
		}
	}
	s.flushDrops() // before the datagrams move on, so counts are never behind them
	if s.cfg.Cluster != nil {
		s.flushForwards(in.Listener)
	}
	for _, e := range s.touched {
		if e.out != nil {
			ctx.Send(e.pid, (*messages.ClientDatagrams)(e.out))
			e.out = nil
		}
	}
	clear(s.touched)
	s.touched = s.touched[:0]
	in.Release()
}

// clock is the time for the batch being routed, read once.
func (s *Supervisor) clock() time.Time {
	if s.batchNow.IsZero() {
		s.batchNow = s.now()
	}
	return s.batchNow
}

// byClient places a well-formed datagram with a client ID: the session of
// its ID, or, for a handshake initiation with a valid mac1 (or any
// datagram with message_types: any), an admission. It returns the session
// the datagram goes to, or nil if it was dropped or taken by an admission.
func (s *Supervisor) byClient(ctx routeContext, h wgproto.Header, d *udpio.Datagram, listener uint8) *entry {
	if h.Type == wgproto.TypeInitiation && s.mac1 != nil && !s.mac1.Valid(d.Bytes()) {
		s.drop(stats.BadMAC1, d)
		return nil
	}
	k := idKey(h.Client)
	if e := s.sessions[k]; e != nil {
		return e
	}
	if s.cfg.Cluster != nil && s.pending[k] == nil && s.elsewhere(h, d, listener) {
		return nil
	}
	if h.Type != wgproto.TypeInitiation && !s.cfg.Clients.AnyTypes {
		s.drop(stats.UnknownClient, d)
		return nil
	}
	s.admit(ctx, k, h.Client, d, listener)
	return nil
}

// byIndex places a plain client's datagram (zero client ID) when plain
// clients are tracked (plain.go): a handshake initiation by its source
// address (a session's client re-keying) or else as an admission; anything
// else by the index the upstream assigned (its receiver index) and its
// source address.
func (s *Supervisor) byIndex(ctx routeContext, h wgproto.Header, d *udpio.Datagram, listener uint8) *entry {
	if !s.cfg.Clients.TrackZeroID {
		s.drop(stats.ZeroClientID, d)
		return nil
	}
	if h.Type == wgproto.TypeInitiation {
		if s.mac1 != nil && !s.mac1.Valid(d.Bytes()) {
			s.drop(stats.BadMAC1, d)
			return nil
		}
		k, known := s.plain.byAddr[d.Addr]
		if known {
			if e := s.sessions[k]; e != nil {
				return e
			}
			if s.pending[k] == nil {
				delete(s.plain.byAddr, d.Addr) // never left behind; defensive
				known = false
			}
		}
		if !known {
			k = s.plain.newKey(s.inUse)
		}
		s.admit(ctx, k, wgproto.ClientID{}, d, listener)
		return nil
	}
	index, _ := h.ReceiverIndex()
	e := s.plain.byReceiver(index, s.clock())
	if e != nil && e.plain.addr == d.Addr {
		return e // the common case: the client's own address and index
	}
	if k, ok := s.plain.byAddr[d.Addr]; ok {
		if c := s.sessions[k]; c != nil {
			return c // a confirmed client, whatever index it carries
		}
	}
	if e != nil {
		return e // a client's index from a new address: roam decides
	}
	s.drop(stats.ZeroIDUnknownIndex, d)
	return nil
}

// inUse reports whether k names a session or an admission.
func (s *Supervisor) inUse(k key) bool { return s.sessions[k] != nil || s.pending[k] != nil }

// deviating places a datagram that is not well-formed WireGuard: with
// message_types: any, one of at least 32 bytes with a non-zero client ID
// goes to its ID's session or asks for one (the seed's rule); everything
// else is dropped under its verdict.
func (s *Supervisor) deviating(ctx routeContext, h wgproto.Header, v wgproto.Verdict, d *udpio.Datagram, listener uint8) *entry {
	if !s.cfg.Clients.AnyTypes || d.N < wgproto.MinTransportSize || h.Client.IsZero() {
		s.drop(verdictReason[v], d)
		return nil
	}
	k := idKey(h.Client)
	if e := s.sessions[k]; e != nil {
		return e
	}
	s.admit(ctx, k, h.Client, d, listener)
	return nil
}

// drop counts d as dropped for r, and says why to whoever can fix it.
func (s *Supervisor) drop(r stats.Reason, d *udpio.Datagram) {
	s.drops[r]++
	if warned(r) {
		s.warn.source(r, d.Addr.Addr(), s.clock)
	}
}

// routeForward hands forward mode's one session the whole batch, less what
// the kernel truncated.
func (s *Supervisor) routeForward(ctx routeContext, in *udpio.Batch) {
	e := s.sessions[idKey(wgproto.ClientID{})]
	if e == nil { // the session has failed: forward mode has no other
		s.drops[stats.SessionGone] += len(in.Datagrams)
		in.Release()
		s.flushDrops()
		return
	}
	k := 0
	for i := range in.Datagrams {
		if in.Datagrams[i].Truncated {
			s.drops[stats.Oversize]++
			continue
		}
		in.Datagrams[i], in.Datagrams[k] = in.Datagrams[k], in.Datagrams[i]
		k++
	}
	in.Datagrams = in.Datagrams[:k]
	s.flushDrops()
	ctx.Send(e.pid, (*messages.ClientDatagrams)(in))
}

var verdictReason = [wgproto.NumVerdicts]stats.Reason{
	wgproto.BadType:    stats.BadType,
	wgproto.BadSize:    stats.BadSize,
	wgproto.ZeroClient: stats.ZeroClientID,
	wgproto.WARPType:   stats.WARPType,
}

// flushDrops adds the drops routing tallied to the relay's counters.
func (s *Supervisor) flushDrops() {
	for r, n := range s.drops {
		if n != 0 {
			s.cfg.Counters.Drop(stats.Reason(r), n)
			s.drops[r] = 0
		}
	}
}
