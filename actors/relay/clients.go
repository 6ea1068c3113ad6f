package relay

import (
	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/config"
)

// clientsOf is which clients a WireGuard relay of cfg serves beyond WARP
// clients with an ID in well-formed WireGuard (zero_id, stamp_client_id,
// message_types), as the supervisor takes it.
func clientsOf(cfg *config.Relay) messages.Clients {
	return messages.Clients{
		TrackZeroID: cfg.ZeroID == config.ZeroIDTrack,
		Stamp:       cfg.StampClientID,
		AnyTypes:    cfg.MessageTypes == config.MessageTypesAny,
	}
}

// clientsChange is the Reconfigure field for a reload from old to cfg: the
// new settings if they changed, else nil.
func clientsChange(old, cfg *config.Relay) *messages.Clients {
	if c := clientsOf(cfg); c != clientsOf(old) {
		return &c
	}
	return nil
}
