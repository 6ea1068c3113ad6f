// Package messages defines every message the relay's actors exchange and
// every event they publish on the actor system's event stream. It imports
// no actor package, so each actor kind depends only on this vocabulary.
//
// Commands are imperative (OpenSession), events past tense (SessionOpened).
// Messages are pointers, matched with `case *messages.X:`.
package messages

import (
	"net/netip"
	"time"

	"github.com/udpfwd/udpfwd/internal/stats"

	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// The datagram-carrying messages are udpio.Batch under other names, so that
// a batch changes hands (and meaning) by a pointer conversion, without an
// allocation. Whoever receives one owns it and must hand it on or Release it.

// ClientDatagrams carries datagrams read from clients: the listener sends a
// whole read batch to the supervisor, which sends each session the part that
// is its client's.
type ClientDatagrams udpio.Batch

// UpstreamDatagrams carries datagrams a session's socket read from upstream,
// from the session's reader goroutine to the session actor.
type UpstreamDatagrams udpio.Batch

// ClientReplies carries datagrams addressed to clients, from a session to
// the writer, which sends them from the listening socket.
type ClientReplies udpio.Batch

// Batch returns the underlying batch.
func (m *ClientDatagrams) Batch() *udpio.Batch { return (*udpio.Batch)(m) }

// Batch returns the underlying batch.
func (m *UpstreamDatagrams) Batch() *udpio.Batch { return (*udpio.Batch)(m) }

// Batch returns the underlying batch.
func (m *ClientReplies) Batch() *udpio.Batch { return (*udpio.Batch)(m) }

// IgnoreDeadLetterLogging keeps protoactor from logging a batch that reached
// a stopped actor; the relay counts those as dropped instead.
func (*ClientDatagrams) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging keeps protoactor from logging a batch that reached
// a stopped actor; the relay counts those as dropped instead.
func (*UpstreamDatagrams) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging keeps protoactor from logging a batch that reached
// a stopped actor; the relay counts those as dropped instead.
func (*ClientReplies) IgnoreDeadLetterLogging() {}

// AdmitSession asks a client's policy actor whether a session may open for
// the client that sent a handshake initiation. The policy answers the
// sender with SessionAdmitted or SessionRefused. It is asked once per new
// session, never per datagram.
//
// It carries no session counts: limits.Caps, behind the Caps policy, is
// the one owner of those.
type AdmitSession struct {
	// Client is the client ID asking; the zero ID for a plain WireGuard
	// client (zero_id: track), which has none.
	Client wgproto.ClientID
	// From is the source address of the initiation that asks (for a
	// restored session, its saved client address).
	From netip.AddrPort
	// Ticket, if not zero, names the admission: the answer must carry it
	// (Admit and Refuse copy it). Plain clients' admissions have one.
	Ticket uint32
}

// SessionAdmitted answers AdmitSession: open the session.
type SessionAdmitted struct {
	Client wgproto.ClientID
	Ticket uint32 // AdmitSession.Ticket
}

// SessionRefused answers AdmitSession: do not open the session.
type SessionRefused struct {
	Client wgproto.ClientID
	Ticket uint32 // AdmitSession.Ticket
	Reason string
}

// CheckIdle tells a session to check its idle deadline; its own timer sends
// it, so it is never queued behind more than the session's own traffic.
type CheckIdle struct{}

// IgnoreDeadLetterLogging: a timer may fire just after its session stopped.
func (*CheckIdle) IgnoreDeadLetterLogging() {}

// SessionIdle tells the supervisor that a session has been idle for its
// timeout. The supervisor forgets the client ID at once, so no datagram is
// routed to a stopping session, and then stops the session after the
// datagrams already queued for it.
type SessionIdle struct {
	Session SessionInfo
	// Side says which direction was silent: "client" or "upstream".
	Side string
	// Handle is the supervisor's name for the session (session.Config).
	Handle uint32
}

// Crash makes a session panic. Sent to the supervisor, it is forwarded to
// the session of Client. It exists for fault injection — supervision tests
// and drills — and nothing in the relay sends it; no datagram can produce it.
type Crash struct {
	Client wgproto.ClientID
	Reason string
}

// UpstreamResolved tells the supervisor an upstream endpoint's current
// address; new sessions connect to it, existing sessions keep theirs.
type UpstreamResolved struct {
	// Endpoint names the endpoint whose name resolved ("host:port" as
	// configured); empty is the relay's first endpoint.
	Endpoint string
	Addr     netip.AddrPort
}

// ListSessions asks the supervisor for its live sessions; it responds with
// SessionList. It is for the session API, not for the datagram path.
type ListSessions struct{}

// SessionList answers ListSessions.
type SessionList struct {
	Relay    string
	Sessions []SessionStatus
}

// SessionStatus is one live session: who it is and what it has moved.
type SessionStatus struct {
	SessionInfo
	Stats stats.SessionSnapshot
	// Roam is the session's roaming state to save, as roam.Peer exports it.
	Roam []byte
}

// RestoreSessions tells the supervisor to re-open sessions saved before a
// restart or a reload. The relay sends it before any datagram arrives.
type RestoreSessions struct {
	Sessions []RestoredSession
}

// RestoredSession is one saved session: its identity, the upstream socket
// address to re-bind (Info.UpstreamLocal) and the upstream it was connected
// to (Info.Upstream) as the endpoint it used then (Info.Endpoint), so that
// the upstream sees the same 4-tuple.
type RestoredSession struct {
	Info    SessionInfo
	Created time.Time
	// Roam is the session's saved roaming state, as roam.Peer exports it.
	Roam []byte
	// Rebind, if not empty, says why the saved upstream port may not be
	// bound again (today's configuration would not bind it): the session
	// gets a port as a new session would, and is reported as Rebound.
	Rebind string
}
