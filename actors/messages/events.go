package messages

import (
	"net/netip"
	"time"

	"github.com/google/uuid"

	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// SessionInfo identifies a session in every lifecycle event.
type SessionInfo struct {
	Relay   string    // the relay's name
	Session uuid.UUID // unique per session, for logs and the session API
	Client  wgproto.ClientID
	// ClientAddr is where the client's replies go (its confirmed address).
	ClientAddr netip.AddrPort
	// UpstreamLocal is the session's own upstream socket address: the
	// stable source port the upstream sees.
	UpstreamLocal netip.AddrPort
	Upstream      netip.AddrPort
	// Endpoint is the configured upstream endpoint ("host:port", as
	// written) the session uses now, of the relay's pool; empty in
	// forward mode.
	Endpoint string
}

// The lifecycle events below are published on the actor system's event
// stream. Logging subscribes to them; metrics and persistence can too.

// SessionOpened: a session was admitted and its upstream socket bound.
type SessionOpened struct {
	SessionInfo
}

// ClientRoamed: a session's replies now go to a new client address.
type ClientRoamed struct {
	SessionInfo
	From netip.AddrPort // the previous client address
	// Followed is set when the session followed the newest address
	// because the upstream has not answered a handshake in it yet (or in
	// forward mode), rather than on evidence from the WireGuard exchange
	// (internal/roam): anyone who knows the client ID can cause such a
	// move, so it is not part of the audit trail.
	Followed bool
}

// SessionExpired: a session ended because one direction was silent for its
// idle timeout.
type SessionExpired struct {
	SessionInfo
	Side    string // "client" or "upstream": which direction was silent
	Timeout time.Duration
}

// SessionFailed: a session ended because it panicked; the others go on.
type SessionFailed struct {
	SessionInfo
	Reason string
}

// SessionRestored: a session saved before a restart or reload was opened
// again. If Rebound, its old upstream port could not, or by today's
// configuration may not, be bound again and it has a new one
// (Info.UpstreamLocal), so the upstream sees a new 4-tuple.
type SessionRestored struct {
	SessionInfo
	Rebound bool
	Wanted  netip.AddrPort // the port asked for
	Err     string         // why it was not re-bound
}

// SessionClosed: a session ended because the relay is shutting down.
type SessionClosed struct {
	SessionInfo
}

// SessionEvent is implemented by every lifecycle event.
type SessionEvent interface {
	Info() SessionInfo
}

// Info returns the session the event is about.
func (s SessionInfo) Info() SessionInfo { return s }
