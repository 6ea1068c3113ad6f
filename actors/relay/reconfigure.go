package relay

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/policy"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// ErrRestart is returned (wrapped) by Reconfigure for a change it does not
// make in place: the relay's mode, a forward relay's upstream or outbound
// address (its one outbound socket is the forward), its number of workers
// or reuse_port (every listening group is built anew), or more new listen
// addresses than listener indexes are left. Nothing was changed; the
// caller starts the relay anew instead, carrying its sessions over with
// Snapshot and WithRestore.
var ErrRestart = errors.New("the change needs the relay started anew")

// Reconfigure applies cfg, a validated configuration of the same relay
// (same name), to the running relay without closing its listening sockets
// or any session's upstream socket. What changes, and how:
//
//   - idle_timeout: every live session checks its idle clock against the
//     new timeout at once; new sessions get it.
//   - security: new admissions go through a new policy chain (allow-lists,
//     caps, client rate) and the new mac1 key. The caps keep counting the
//     sessions admitted before: a lower cap evicts no one but admits no
//     one until enough have ended. A changed client_rate is applied to
//     every live session. Live sessions the new allow-lists refuse, by
//     client ID or by their client's current address, end (as closed).
//   - read_buffer, write_buffer, gso: set on every open socket.
//   - resolve_interval: the resolver looks the name up again now and then
//     at the new interval.
//   - upstream (one endpoint or a pool): new sessions connect to the new
//     endpoints (a name, once it resolves); a live session stays if its
//     endpoint is still in the pool, or else if its own upstream address
//     is one of the new endpoints' literal addresses, and ends otherwise.
//     Endpoints that stay keep their health records and resolvers.
//   - failover_after: applies to new and live sessions and to the
//     endpoints' health at once.
//   - upstream_bind, upstream_ports: new sessions' sockets obey them; live
//     sessions keep their sockets and ports (the port is what keeps a
//     client on its WARP server); a restart re-binds those outside them.
//   - listen: only the listening sockets of addresses added or removed are
//     bound or closed. A removed socket's listener index is never used
//     again, so no reply of a session that used it leaves by another
//     socket: its replies are dropped (no_peer) until its client is heard
//     on a socket that still exists.
//
// If a new listen address cannot be bound while the old ones all run,
// nothing is changed and the error names it. One that could be bound only
// after a removed socket closed (the same port) and still fails is left
// out: the rest applies, the relay reports the address as down (Healthy),
// Config leaves it out so that the next reload tries again, and the error
// names it.
func (r *Relay) Reconfigure(cfg config.Relay) error {
	r.ops.Lock()
	defer r.ops.Unlock()
	if r.closed {
		return fmt.Errorf("relay %s: closed", r.name)
	}
	old := r.Config()
	switch {
	case cfg.Name != old.Name:
		return fmt.Errorf("relay %s: cannot become relay %q", r.name, cfg.Name)
	case len(cfg.Listen) == 0 || cfg.Upstream.IsZero():
		return fmt.Errorf("relay %s: no listen address or no upstream (validate the config first)", r.name)
	case cfg.Mode != old.Mode:
		return fmt.Errorf("relay %s: mode %s to %s: %w", r.name, old.Mode, cfg.Mode, ErrRestart)
	case cfg.Mode == config.ModeForward && (cfg.Upstream != old.Upstream || cfg.UpstreamBind != old.UpstreamBind):
		return fmt.Errorf("relay %s: a forward's outbound socket changes: %w", r.name, ErrRestart)
	case workerCount(&cfg) != len(r.workers):
		return fmt.Errorf("relay %s: %d workers to %d, each listening group is built anew: %w", r.name, len(r.workers), workerCount(&cfg), ErrRestart)
	case cfg.ReusePort != old.ReusePort:
		return fmt.Errorf("relay %s: reuse_port changes, each listening group is built anew: %w", r.name, ErrRestart)
	}
	wireguard := cfg.Mode == config.ModeWireGuard
	sockOpts := socketOptions(&cfg)
	gcfg := groupConfig(&cfg, len(r.workers))

	// Which listening sockets stay, which go, which addresses are new.
	r.mu.RLock()
	nslots := len(r.slots)
	var kept, removed []int
	matched := make([]bool, len(cfg.Listen))
	for i, sl := range r.slots {
		if sl == nil {
			continue
		}
		j := slices.IndexFunc(cfg.Listen, func(a netip.AddrPort) bool { return a == sl.want })
		for j >= 0 && matched[j] { // the same address twice (port 0): one socket each
			k := slices.IndexFunc(cfg.Listen[j+1:], func(a netip.AddrPort) bool { return a == sl.want })
			if k < 0 {
				j = -1
				break
			}
			j += 1 + k
		}
		if j < 0 {
			removed = append(removed, i)
			continue
		}
		matched[j] = true
		kept = append(kept, i)
	}
	r.mu.RUnlock()
	var added []netip.AddrPort
	for j, a := range cfg.Listen {
		if !matched[j] {
			added = append(added, a)
		}
	}
	if nslots+len(added) > config.MaxListen {
		return fmt.Errorf("relay %s: %d listener indexes used since it started, %d more asked for: %w",
			r.name, nslots, len(added), ErrRestart)
	}

	// Bind what is new while the old sockets still run. An address a
	// removed socket still holds (the same port, written another way)
	// waits until that socket is closed.
	groups := make([]*udpio.Group, len(added))
	var later []int
	for i, a := range added {
		g, err := udpio.ListenGroup(a, gcfg)
		if err != nil {
			if len(removed) > 0 && errors.Is(err, syscall.EADDRINUSE) {
				later = append(later, i)
				continue
			}
			for _, g := range groups {
				if g != nil {
					g.Close()
				}
			}
			return fmt.Errorf("relay %s: listen on %s: %w", r.name, a, unwrapGroup(err))
		}
		groups[i] = g
	}
	// From here on the change is made; what fails is reported, not undone.

	msg := &messages.Reconfigure{
		IdleTimeout:   cfg.IdleTimeout,
		UpstreamBind:  cfg.UpstreamBind,
		UpstreamPorts: [2]uint16{cfg.UpstreamPorts.First, cfg.UpstreamPorts.Last},
	}
	if cfg.ReadBuffer != old.ReadBuffer || cfg.WriteBuffer != old.WriteBuffer || cfg.NoGSO != old.NoGSO {
		msg.Socket = &messages.SocketSettings{ReadBuffer: cfg.ReadBuffer, WriteBuffer: cfg.WriteBuffer, NoGSO: cfg.NoGSO}
	}
	if wireguard {
		msg.Clients = clientsChange(&old, &cfg)
		r.securityChanges(msg, &old.Security, &cfg.Security)
		// The upstreams: the resolvers of endpoints that leave stop before
		// the supervisor hears of the new pool, so that no late answer
		// about them follows; an endpoint that stays keeps its resolver
		// and its address.
		if eps := cfg.Endpoints(); !slices.Equal(eps, old.Endpoints()) {
			stays := func(name string) bool {
				return slices.ContainsFunc(eps, func(h config.HostPort) bool { return h.String() == name })
			}
			r.stopResolvers(stays)
			for _, h := range old.Endpoints() {
				if !stays(h.String()) {
					r.setEndpointAddr(h.String(), netip.AddrPort{})
				}
			}
			msg.UpstreamChanged = true
			msg.Endpoints = r.endpoints(&cfg)
			msg.Upstream = msg.Endpoints[0].Addr
		}
		if cfg.FailoverAfter != old.FailoverAfter {
			msg.FailoverAfter = cfg.FailoverAfter
		}
	}

	// Removed addresses stop: each worker's listener ends its reader, so
	// no batch carries their index any more, and then the group closes
	// whole.
	var errs []error
	r.mu.Lock()
	gone := make([]*slot, 0, len(removed))
	for _, i := range removed {
		gone = append(gone, r.slots[i])
	}
	r.mu.Unlock()
	r.untrack(gone...)
	r.stopAll(&errs, listenersOf(gone)...)
	r.mu.Lock()
	for _, i := range removed {
		r.retired = append(r.retired, r.slots[i].writers...)
		r.slots[i] = nil
	}
	r.mu.Unlock()
	for _, sl := range gone {
		sl.group.Close()
	}
	var missing []netip.AddrPort
	for _, i := range later {
		g, err := udpio.ListenGroup(added[i], gcfg)
		if err != nil {
			missing = append(missing, added[i])
			errs = append(errs, fmt.Errorf("listen on %s: %w", added[i], unwrapGroup(err)))
			continue
		}
		groups[i] = g
	}

	// New groups get their writers now and their listeners once every
	// session has the writers: a batch with a new index reaches a session
	// only after the ApplySettings that names its writer.
	r.mu.RLock()
	fresh := make([]*slot, 0, len(added))
	tables := make([][]*actor.PID, len(r.workers))
	for _, w := range r.workers {
		tables[w.index] = writerTable(r.slots, w.index)
	}
	live := make([]*slot, 0, len(r.slots))
	for _, sl := range r.slots {
		if sl != nil {
			live = append(live, sl)
		}
	}
	r.mu.RUnlock()
	for i, g := range groups {
		if g == nil {
			continue
		}
		r.logBuffers(g.Conns()[0], "listen "+g.LocalAddr().String(), sockOpts)
		sl := &slot{want: added[i], addr: g.LocalAddr(), group: g}
		for _, w := range r.workers {
			sl.writers = append(sl.writers, r.spawnWriter(w, sl.conn(w.index)))
			tables[w.index] = append(tables[w.index], sl.writers[w.index])
		}
		fresh = append(fresh, sl)
	}
	if msg.Socket != nil {
		for _, sl := range live {
			for _, w := range r.workers {
				c := sl.conn(w.index)
				if err := c.SetBuffers(cfg.ReadBuffer, cfg.WriteBuffer); err != nil {
					errs = append(errs, fmt.Errorf("set the buffers of %s: %w", c.LocalAddr(), err))
				}
				r.system.Root.Send(sl.writers[w.index], msg.Socket)
			}
		}
	}

	// Every worker's supervisor takes the settings, with its own writers.
	ended := 0
	futures := make([]*actor.Future, len(r.workers))
	for _, w := range r.workers {
		m := *msg
		if len(added) > 0 || len(removed) > 0 {
			m.Writers = tables[w.index]
		}
		futures[w.index] = r.system.Root.RequestFuture(w.supervisor, &m, reconfigureTimeout)
	}
	for i, f := range futures {
		res, err := f.Result()
		if err != nil {
			errs = append(errs, fmt.Errorf("the supervisor of worker %d did not take the settings: %w", i, err))
		} else if done, ok := res.(*messages.Reconfigured); ok {
			ended += done.Ended
		}
	}

	r.mu.Lock()
	for _, sl := range fresh {
		for _, w := range r.workers {
			sl.listeners = append(sl.listeners, r.spawnListener(w, len(r.slots), sl.conn(w.index)))
		}
		r.slots = append(r.slots, sl)
	}
	applied := cfg
	applied.Listen = slices.DeleteFunc(slices.Clone(cfg.Listen), func(a netip.AddrPort) bool { return slices.Contains(missing, a) })
	r.cfg, r.missing = applied, missing
	r.mu.Unlock()
	r.drops.track(fresh...)

	r.resolveEvery.Store(int64(cfg.ResolveInterval))
	if wireguard {
		if cfg.ResolveInterval != old.ResolveInterval {
			r.kickResolvers()
		}
		r.startResolvers(&cfg)
	}

	fields := []zap.Field{zap.Strings("changed", changedKeys(&old, &cfg)), zap.Int("sessions_ended", ended)}
	if len(added) > 0 || len(removed) > 0 {
		fields = append(fields, zap.Stringers("listen", r.ListenAddrs()))
	}
	r.log.Info("relay reconfigured in place", fields...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("relay %s: %w", r.name, err)
	}
	return nil
}

// securityChanges fills in what of the security block the supervisor
// needs: the new policy chain and mac1 key for new admissions, the
// allow-lists' verdict on live sessions if the lists changed, and the
// client rate for live sessions if it changed. The caps and the admission
// budget change here, in place.
func (r *Relay) securityChanges(msg *messages.Reconfigure, old, s *config.Security) {
	r.caps.Reconfigure(capsConfig(s), time.Now())
	if r.admission != nil {
		r.admission.Reconfigure(admissionConfig(s))
	}
	r.status.SetSessionLimit(maxSessions(s))
	msg.Policy = r.policies(s)
	msg.MAC1 = mac1Key(s)
	listsChanged := !slices.Equal(old.AllowClients, s.AllowClients) ||
		!slices.Equal(old.AllowCIDRs, s.AllowCIDRs) || !slices.Equal(old.DenyCIDRs, s.DenyCIDRs)
	if listsChanged && (len(s.AllowClients) > 0 || len(s.AllowCIDRs) > 0 || len(s.DenyCIDRs) > 0) {
		msg.Refuse = policy.AllowLists(s.AllowClients, s.AllowCIDRs, s.DenyCIDRs)
	}
	if l := clientRate(s); l != clientRate(old) {
		apply := messages.ApplyLimits(l)
		msg.Limits = &apply
	}
}

// stopAll stops the actors and waits, adding what fails to errs.
func (r *Relay) stopAll(errs *[]error, pids ...*actor.PID) {
	futures := make([]*actor.Future, 0, len(pids))
	for _, pid := range pids {
		futures = append(futures, r.system.Root.StopFuture(pid))
	}
	for i, f := range futures {
		if err := f.Wait(); err != nil {
			*errs = append(*errs, fmt.Errorf("stop %s: %w", pids[i].Id, err))
		}
	}
}

// changedKeys names the keys whose values differ between a and b, for the
// log.
func changedKeys(a, b *config.Relay) []string {
	var keys []string
	for _, k := range []struct {
		key     string
		changed bool
	}{
		{"listen", !slices.Equal(a.Listen, b.Listen)},
		{"upstream", !slices.Equal(a.Endpoints(), b.Endpoints())},
		{"failover_after", a.FailoverAfter != b.FailoverAfter},
		{"idle_timeout", a.IdleTimeout != b.IdleTimeout},
		{"resolve_interval", a.ResolveInterval != b.ResolveInterval},
		{"upstream_bind", a.UpstreamBind != b.UpstreamBind},
		{"upstream_ports", a.UpstreamPorts != b.UpstreamPorts},
		{"read_buffer", a.ReadBuffer != b.ReadBuffer},
		{"write_buffer", a.WriteBuffer != b.WriteBuffer},
		{"gso", a.NoGSO != b.NoGSO},
		{"security", !a.Security.Equal(&b.Security)},
	} {
		if k.changed {
			keys = append(keys, k.key)
		}
	}
	return keys
}
