package main

import (
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
)

// fromFile turns a validated config file into relay configurations. Flags
// given on the command line override the file: the daemon-wide ones
// (logging, admin, state file) and, for every relay, the per-relay ones.
func fromFile(f *config.File, o *options) ([]relay.Config, error) {
	if !o.set["log-level"] {
		o.logLevel = f.Log.Level
	}
	if !o.set["log-format"] {
		o.logFormat = f.Log.Format
	}
	if !o.set["admin"] {
		o.admin = f.Admin
	}
	if !o.set["state-file"] {
		o.stateFile = f.StateFile
	}
	cs := make([]relay.Config, 0, len(f.Relays))
	for i := range f.Relays {
		r := &f.Relays[i]
		c := relay.Config{
			Name:            r.Name,
			Mode:            relay.Mode(r.Mode),
			Upstream:        r.Upstream,
			IdleTimeout:     r.IdleTimeout,
			ResolveInterval: r.ResolveInterval,
			UpstreamPorts:   relay.PortRange{First: r.UpstreamPorts.First, Last: r.UpstreamPorts.Last},
			ReadBuffer:      r.ReadBuffer,
			WriteBuffer:     r.WriteBuffer,
			NoGSO:           r.NoGSO,
		}
		for _, l := range r.Listen {
			c.Listen = append(c.Listen, l.String())
		}
		if r.UpstreamBind.IsValid() {
			c.UpstreamBind = r.UpstreamBind.String()
		}
		if o.set["idle-timeout"] && c.Mode == relay.ModeWireGuard {
			c.IdleTimeout = o.idleTimeout
		}
		if o.set["socket-buffer"] {
			c.ReadBuffer, c.WriteBuffer = o.socketBuffer, o.socketBuffer
		}
		if o.set["no-gso"] {
			c.NoGSO = o.noGSO
		}
		if o.set["upstream-bind"] {
			c.UpstreamBind = o.upstreamBind
		}
		if c.Mode == relay.ModeWireGuard {
			c.Security = securityFromFile(&r.Security)
			if err := o.security.apply(&c.Security, o.set); err != nil {
				return nil, usageError{err}
			}
		}
		if err := c.Validate(); err != nil {
			return nil, usageError{err}
		}
		cs = append(cs, c)
	}
	return cs, nil
}
