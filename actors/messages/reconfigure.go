package messages

import (
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// The messages of a reload in place: the relay tells its supervisor the new
// settings, and the supervisor tells each live session, and the relay each
// writer, what concerns them. No socket a setting does not name is closed.

// Reconfigure tells the supervisor its relay's new settings (a SIGHUP
// reload). It applies them in place: new admissions and new sessions use
// them, live sessions get ApplySettings, and live sessions the new settings
// refuse end (as closed). It answers Reconfigured. The relay sends it as a
// request and waits for the answer, so that what it does next (starting a
// new listening socket's listener) comes after every session was told.
type Reconfigure struct {
	// IdleTimeout is the new idle timeout (zero in forward mode, where the
	// one session never expires).
	IdleTimeout time.Duration
	// UpstreamBind and UpstreamPorts are where new sessions' upstream
	// sockets bind; live sessions keep theirs.
	UpstreamBind  netip.AddrPort
	UpstreamPorts [2]uint16
	// Socket, if not nil, are the new socket settings, for new sessions'
	// sockets and, through ApplySettings, live sessions' sockets.
	Socket *SocketSettings
	// Policy makes the policy actor that admits each new session (the
	// Factory of package policy); nil keeps the current one. Live
	// sessions keep the policy actor that admitted them.
	Policy func() *actor.Props
	// MAC1 is the upstream's mac1 key new initiations are checked with;
	// nil checks none.
	MAC1 *wgproto.MAC1Key
	// Writers, if not nil, are the relay's writers by listening socket
	// index, nil where a listening socket was removed: an index never
	// changes its socket, so the index that batches and saved roaming
	// states carry never sends a reply by another socket.
	Writers []*actor.PID
	// UpstreamChanged says the configured upstream changed. Upstream is
	// its address (new sessions connect to it), or the zero value until a
	// name resolves. A live session stays only if its own upstream address
	// is Upstream; the others end, since they talk to an upstream that is
	// not configured any more.
	UpstreamChanged bool
	Upstream        netip.AddrPort
	// Endpoints, with UpstreamChanged, is the new pool of upstream
	// endpoints, the first being Upstream; a name's address is the zero
	// value until it resolves. A live session stays if its endpoint is
	// still in it (or, failing that, if its upstream address is one of
	// their literal addresses).
	Endpoints []Endpoint
	// FailoverAfter, if not zero, is the new failover_after.
	FailoverAfter int
	// Refuse, if not nil, is the new allow-lists' verdict on a live
	// session's client at its current address: a refusal reason ends the
	// session, "" keeps it.
	Refuse func(client wgproto.ClientID, from netip.Addr) string
	// Limits, if not nil, is the per-client rate limit every live session
	// is held to from now on (the configured client_rate changed).
	Limits *ApplyLimits
	// Clients, if not nil, says which clients the relay serves from now
	// on (zero_id, stamp_client_id, message_types changed). Live plain
	// sessions end if plain clients are dropped now.
	Clients *Clients
}

// Reconfigured answers Reconfigure.
type Reconfigured struct {
	// Ended is how many live sessions the new settings ended.
	Ended int
}

// SocketSettings are what a reload changes on an open socket: its buffers
// and its UDP GSO switch. A writer (for its listening socket) and a session
// (through ApplySettings, for its upstream socket) apply them in their own
// turn, since GSO is the writing goroutine's switch.
type SocketSettings struct {
	ReadBuffer, WriteBuffer int
	NoGSO                   bool
}

// ApplySettings tells a live session what of a reload concerns it. Fields
// left at their zero value (nil) leave the session's setting as it is.
type ApplySettings struct {
	// IdleTimeout, if not zero, is the new idle timeout; the session
	// checks its idle clock against it at once.
	IdleTimeout time.Duration
	// Writers are the relay's writers by listening socket index, as in
	// Reconfigure.
	Writers []*actor.PID
	// Socket are the upstream socket's new settings.
	Socket *SocketSettings
	// Limits is the client's new rate limit.
	Limits *ApplyLimits
	// FailoverAfter, if not zero, is the new failover_after.
	FailoverAfter int
	// Endpoint, if not empty, is the upstream endpoint the session is
	// counted under from now on: a reload renamed its endpoint (a name
	// became the literal address the session is connected to).
	Endpoint string
}
