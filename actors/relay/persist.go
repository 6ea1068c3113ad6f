package relay

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/state"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// WithRestore makes Start re-open sessions saved by an earlier run (or by
// this relay before a reload), each on its old upstream port. Sessions saved
// for another upstream are left out: their 4-tuple could not be kept.
func WithRestore(saved []state.Session) Option {
	return func(r *Relay) { r.restore = saved }
}

// restoreMessage turns saved sessions into the supervisor's message,
// leaving out (and logging) what cannot be restored into this relay.
func (r *Relay) restoreMessage() *messages.RestoreSessions {
	m := &messages.RestoreSessions{}
	for _, s := range r.restore {
		rs, err := r.restoredSession(s)
		if err != nil {
			r.log.Warn("saved session not restored", zap.String("session", s.ID), zap.String("client", s.Client), zap.Error(err))
			continue
		}
		m.Sessions = append(m.Sessions, rs)
	}
	return m
}

func (r *Relay) restoredSession(s state.Session) (messages.RestoredSession, error) {
	var rs messages.RestoredSession
	if s.UpstreamConfig != r.cfg.Upstream.String() {
		return rs, fmt.Errorf("saved for upstream %q, the relay now has %q", s.UpstreamConfig, r.cfg.Upstream)
	}
	id, err := uuid.Parse(s.ID)
	if err != nil {
		return rs, fmt.Errorf("session ID: %w", err)
	}
	client, err := wgproto.ParseClientID(s.Client)
	if err != nil {
		return rs, err
	}
	local, err := netip.ParseAddrPort(s.UpstreamLocal)
	if err != nil {
		return rs, fmt.Errorf("upstream local address: %w", err)
	}
	up, err := netip.ParseAddrPort(s.Upstream)
	if err != nil {
		return rs, fmt.Errorf("upstream address: %w", err)
	}
	var clientAddr netip.AddrPort
	if s.ClientAddr != "" {
		if clientAddr, err = netip.ParseAddrPort(s.ClientAddr); err != nil {
			return rs, fmt.Errorf("client address: %w", err)
		}
	}
	rs.Info = messages.SessionInfo{
		Relay: r.cfg.Name, Session: id, Client: client, ClientAddr: clientAddr,
		UpstreamLocal: local, Upstream: up,
	}
	rs.Created = s.Created
	rs.Roam = s.Roam
	return rs, nil
}

// Snapshot returns the relay's live sessions in the form the state file
// keeps them.
func (r *Relay) Snapshot(timeout time.Duration) ([]state.Session, error) {
	if r.cfg.Mode != config.ModeWireGuard {
		return nil, nil // forward mode re-binds its one socket from its rule
	}
	l, err := r.Sessions(timeout)
	if err != nil {
		return nil, err
	}
	out := make([]state.Session, 0, len(l.Sessions))
	for _, s := range l.Sessions {
		out = append(out, state.Session{
			ID:             s.Session.String(),
			Client:         s.Client.String(),
			ClientAddr:     addrString(s.ClientAddr),
			UpstreamLocal:  s.UpstreamLocal.String(),
			Upstream:       s.Upstream.String(),
			UpstreamConfig: r.cfg.Upstream.String(),
			Created:        s.Stats.Created,
			Roam:           s.Roam,
		})
	}
	return out, nil
}

func addrString(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
