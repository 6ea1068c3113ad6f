package messages

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/udpfwd/udpfwd/internal/udpio"
)

// The messages and events of a relay's pool of upstream endpoints: sessions
// tell the supervisor how their handshakes went, the supervisor keeps each
// endpoint's health (internal/pool), and a session whose endpoint stopped
// answering asks to move. The session owns its upstream socket throughout:
// the supervisor only dials the new one and hands it over.
//
//	session ──EndpointHandshake──► supervisor   (per handshake, answered or not)
//	session ──MoveSession────────► supervisor   (failover_after unanswered in a row)
//	session ◄─SwapUpstream──────── supervisor   (a new socket on another endpoint)
//	session ◄─StayOnEndpoint────── supervisor   (nowhere better to go)

// Endpoint is one upstream endpoint of a relay: its name as configured
// ("host:port") and its address now, the zero value while a name has none.
type Endpoint struct {
	Name string
	Addr netip.AddrPort
}

// EndpointHandshake tells the supervisor how one of a session's handshakes
// with its endpoint went: answered, RTT after the initiation was forwarded
// (0 for a cookie reply, which shows the endpoint alive but busy), or not
// (the client retried the initiation unanswered). Sessions send one per
// handshake, never per datagram.
type EndpointHandshake struct {
	// Endpoint is the endpoint the initiation went to.
	Endpoint string
	Answered bool
	RTT      time.Duration
}

// MoveSession asks the supervisor to move a session to another endpoint:
// Unanswered of its handshake initiations in a row (failover_after or more)
// went unanswered. The session holds its newest initiation until the
// answer, SwapUpstream or StayOnEndpoint, and sends it at once by whichever
// socket it then has.
type MoveSession struct {
	Session SessionInfo
	// Handle is the supervisor's name for the session (session.Config).
	Handle     uint32
	Unanswered int
}

// SwapUpstream answers MoveSession with a new upstream socket, bound and
// connected to Upstream, another endpoint (a dead endpoint has broken the
// old 4-tuple already, and a socket is connected to one address). The
// session closes its old socket, reads the new one and sends its held
// initiation on it. The socket is taken exactly once (Take): by the session,
// or, if the session stopped before it could, by the supervisor, which
// closes it when the session has terminated.
type SwapUpstream struct {
	Endpoint string
	Upstream netip.AddrPort
	conn     atomic.Pointer[udpio.Conn]
}

// NewSwapUpstream hands conn, connected to endpoint's address up, over.
func NewSwapUpstream(endpoint string, up netip.AddrPort, conn *udpio.Conn) *SwapUpstream {
	m := &SwapUpstream{Endpoint: endpoint, Upstream: up}
	m.conn.Store(conn)
	return m
}

// Take returns the socket to its first caller, and nil to any other.
func (m *SwapUpstream) Take() *udpio.Conn { return m.conn.Swap(nil) }

// StayOnEndpoint answers MoveSession when the session stays: its endpoint
// still answers other sessions (the trouble is this client's), or no other
// endpoint is up or due for a try, or none could be dialled. The session
// sends its held initiation by its own socket and asks again at its next
// unanswered one.
type StayOnEndpoint struct {
	Reason string
}

// SessionMoved: a session's endpoint stopped answering its handshakes and
// the session moved to another endpoint, on a new upstream socket (so the
// upstream sees a new 4-tuple: its client hand-shakes with the new
// endpoint, as it was already trying to). Its client ID, client address
// and UUID stay.
type SessionMoved struct {
	// SessionInfo is the session as it is now: its new endpoint, upstream
	// address and upstream socket.
	SessionInfo
	FromEndpoint      string
	FromUpstream      netip.AddrPort
	FromUpstreamLocal netip.AddrPort
	// Unanswered is how many of its initiations in a row went unanswered.
	Unanswered int
}

// EndpointInfo names an upstream endpoint in an endpoint event.
type EndpointInfo struct {
	Relay    string
	Endpoint string         // as configured, "host:port"
	Addr     netip.AddrPort // its address then
}

// About returns the endpoint the event is about.
func (e EndpointInfo) About() EndpointInfo { return e }

// EndpointEvent is implemented by EndpointDown and EndpointUp.
type EndpointEvent interface {
	About() EndpointInfo
}

// EndpointDown: an endpoint left Unanswered handshake initiations in a
// row, across its sessions, unanswered: new sessions skip it until it is
// tried again in RetryIn, and its sessions move as their own initiations
// go unanswered.
type EndpointDown struct {
	EndpointInfo
	Unanswered int
	RetryIn    time.Duration
}

// EndpointUp: a down endpoint answered a handshake again, RTT after it
// was forwarded (0 for a cookie reply), having been down for DownFor.
type EndpointUp struct {
	EndpointInfo
	RTT     time.Duration
	DownFor time.Duration
}
