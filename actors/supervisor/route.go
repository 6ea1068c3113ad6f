package supervisor

import (
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
	for i := range in.Datagrams {
		d := &in.Datagrams[i]
		if d.Truncated {
			s.drops[stats.Oversize]++
			continue
		}
		h, v := wgproto.Parse(d.Bytes())
		if v != wgproto.OK {
			s.drops[verdictReason[v]]++
			continue
		}
		if h.Type == wgproto.TypeInitiation && s.mac1 != nil && !s.mac1.Valid(d.Bytes()) {
			s.drops[stats.BadMAC1]++
			continue
		}
		e := s.sessions[h.Client]
		if e == nil {
			if h.Type != wgproto.TypeInitiation {
				s.drops[stats.UnknownClient]++
				continue
			}
			s.admit(ctx, h.Client, d, in.Listener)
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

// routeForward hands forward mode's one session the whole batch, less what
// the kernel truncated.
func (s *Supervisor) routeForward(ctx routeContext, in *udpio.Batch) {
	e := s.sessions[wgproto.ClientID{}]
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
