package messages

import (
	"net/netip"

	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Clients says which clients a WireGuard relay serves beyond WARP clients
// that write their client ID into well-formed WireGuard: the config's
// zero_id, stamp_client_id and message_types. The supervisor routes by it;
// a reload sends the new one (Reconfigure.Clients).
type Clients struct {
	// TrackZeroID serves plain WireGuard clients (client ID zero): a
	// handshake initiation opens a session as an ID's does, and the
	// session is found again by the index the upstream assigned it and by
	// its client's confirmed address (zero_id: track).
	TrackZeroID bool
	// Stamp, if not zero, is written into bytes 1..3 of what tracked plain
	// clients send upstream, and cleared from what goes back to them
	// (stamp_client_id). New sessions take it; live ones keep theirs.
	Stamp wgproto.ClientID
	// AnyTypes forwards any datagram of at least 32 bytes with a non-zero
	// client ID for its session, and lets it open one (message_types:
	// any, the seed's rule); a session that carries one follows its
	// client's newest address from then on.
	AnyTypes bool
}

// IndexLearned tells the supervisor an index the upstream assigned a
// tracked plain session (the sender index of a handshake response, or of
// an initiation the upstream sent), so that it routes the client's
// datagrams that carry it as their receiver index to the session. The
// session sends it before the reply that carries the index leaves for the
// client: the client cannot use the index before the supervisor knows it.
type IndexLearned struct {
	// Handle is the supervisor's name for the session (session.Config).
	Handle uint32
	Index  uint32
}

// ClientConfirmed tells the supervisor that a tracked plain session's
// confirmed client address moved (internal/roam decided), so that a
// handshake initiation from the new address (a rekey) reaches the session
// rather than opening another.
type ClientConfirmed struct {
	Handle uint32
	Addr   netip.AddrPort
}

// Admit is the answer of a policy that admits m's session. Answering with
// it (or copying Ticket) lets the supervisor tell apart admissions that
// share a client ID: plain clients, all of which have the zero ID.
func (m *AdmitSession) Admit() *SessionAdmitted {
	return &SessionAdmitted{Client: m.Client, Ticket: m.Ticket}
}

// Refuse is the answer of a policy that refuses m's session for reason.
func (m *AdmitSession) Refuse(reason string) *SessionRefused {
	return &SessionRefused{Client: m.Client, Ticket: m.Ticket, Reason: reason}
}
