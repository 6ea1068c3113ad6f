package config

import (
	"fmt"

	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Which clients a WireGuard relay serves beyond WARP clients that send
// their client ID in well-formed WireGuard: the keys zero_id,
// stamp_client_id and message_types (README: "Point a WARP client at it",
// Security).

// ZeroID is what a relay does with plain WireGuard clients, whose
// datagrams carry the zero client ID (config zero_id, --zero-id).
type ZeroID string

// The zero_id values.
const (
	// ZeroIDDrop drops them, counted as zero_client_id: the seed's rule,
	// and the default.
	ZeroIDDrop ZeroID = "drop"
	// ZeroIDTrack opens a session for a plain client's handshake
	// initiation, as for a client ID, and finds the session again by what
	// WireGuard itself carries: the index the upstream assigned, and the
	// client's confirmed address.
	ZeroIDTrack ZeroID = "track"
)

// MessageTypes is which datagrams a relay takes for a session (config
// message_types, --message-types).
type MessageTypes string

// The message_types values.
const (
	// MessageTypesStrict takes well-formed WireGuard only: types 1..4 at
	// their exact sizes. The default.
	MessageTypesStrict MessageTypes = "strict"
	// MessageTypesAny applies the seed's rule: any datagram of at least 32
	// bytes with a non-zero client ID is forwarded for its session and may
	// open one; such sessions follow their client's newest address.
	MessageTypesAny MessageTypes = "any"
)

func parseZeroID(s string) (ZeroID, error) {
	switch z := ZeroID(s); z {
	case ZeroIDDrop, ZeroIDTrack, "":
		return z, nil
	}
	return "", fmt.Errorf("%q: want drop or track", s)
}

func parseMessageTypes(s string) (MessageTypes, error) {
	switch m := MessageTypes(s); m {
	case MessageTypesStrict, MessageTypesAny, "":
		return m, nil
	}
	return "", fmt.Errorf("%q: want strict or any", s)
}

// parseStamp reads the client ID to stamp; empty is none.
func parseStamp(s string) (wgproto.ClientID, error) {
	if s == "" {
		return wgproto.ClientID{}, nil
	}
	return wgproto.ParseClientID(s)
}

// validateClients fills in the defaults of zero_id and message_types and
// checks that they go together.
func (r *Relay) validateClients(p *problems, at string) {
	if r.ZeroID == "" {
		r.ZeroID = ZeroIDDrop
	}
	if r.MessageTypes == "" {
		r.MessageTypes = MessageTypesStrict
	}
	if !r.StampClientID.IsZero() && r.ZeroID != ZeroIDTrack {
		p.add(at+".stamp_client_id", nil, "set without zero_id: track (only tracked plain clients are stamped)")
	}
	if r.ZeroID == ZeroIDTrack && len(r.Security.AllowClients) > 0 {
		p.warn(at+".zero_id", "track with security.allow_clients: a plain client has no client ID, so the allow-list refuses every one (admit plain clients by source with allow_cidrs instead)")
	}
}
