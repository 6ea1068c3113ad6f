// Package stats counts what a relay moves and what it drops, with one
// atomic add per batch rather than a lock or a log line per datagram. The
// metrics endpoint and tests read the counters; nothing on the hot path
// reads them.
package stats

import (
	"sync/atomic"
)

// Reason is why a datagram was dropped. Every drop is counted under exactly
// one reason.
type Reason uint8

// Drop reasons. Names are stable: they become metric label values.
const (
	BadType              Reason = iota // byte 0 is not a WireGuard type (or shorter than 4 bytes)
	BadSize                            // size wrong for the WireGuard type
	ZeroClientID                       // client ID bytes 1..3 are zero
	Oversize                           // larger than the relay's buffers; the kernel truncated it
	UnknownClient                      // not a handshake initiation, and no session for its client ID
	AdmissionPending                   // a session for this client ID is being admitted
	PolicyRefused                      // a policy refused to open a session (an operator's own policy, or one that failed or did not answer)
	UpstreamUnresolved                 // the upstream hostname has no address yet
	UpstreamBindFailed                 // no upstream socket could be opened for a new session
	ForeignSource                      // arrived on an upstream socket from another address than the upstream
	NoPeer                             // a reply from upstream, but no client address to send it to
	UpstreamSendError                  // the kernel refused to send it upstream
	ClientSendError                    // the kernel refused to send it to the client
	SessionGone                        // its session ended while it was queued, or the relay stopped while its admission was pending
	BadMAC1                            // a handshake initiation whose mac1 is not valid for the upstream's key
	UnconfirmedRate                    // from an unconfirmed client address, over the budget for those
	UnconfirmedTransport               // a transport message from an unconfirmed address, without a learned index: never the client's
	ClientRate                         // over the client's rate limit
	ClientNotAllowed                   // refused: the client ID is not on the allow-list
	SourceNotAllowed                   // refused: the source address is denied or on no allow-list
	MaxSessions                        // refused: the relay holds its maximum of sessions
	MaxSessionsPerIP                   // refused: the source holds its maximum of sessions
	NewSessionRate                     // refused: the source opens sessions too fast
	AdmissionOverload                  // a handshake initiation for a new client ID over the relay's admission budget (new sessions per source or in all, or admissions in flight)
	ReplayedInitiation                 // a handshake initiation seen recently under another client ID: one initiation opens one session
	QueueFull                          // an actor's queue was full (its mailbox's capacity): the batch it came in was dropped whole
	WARPType                           // type byte 0xc1..0xc4, the official WARP client's own framing (nDPI), with --message-types strict
	ZeroIDUnknownIndex                 // a plain client's datagram (zero client ID, --zero-id track) that no tracked session's index or address matches
	numReasons
)

// NumReasons is the number of drop reasons.
const NumReasons = int(numReasons)

var reasonNames = [NumReasons]string{
	BadType:              "bad_type",
	BadSize:              "bad_size",
	ZeroClientID:         "zero_client_id",
	Oversize:             "oversize",
	UnknownClient:        "unknown_client",
	AdmissionPending:     "admission_pending",
	PolicyRefused:        "policy_refused",
	UpstreamUnresolved:   "upstream_unresolved",
	UpstreamBindFailed:   "upstream_bind_failed",
	ForeignSource:        "foreign_source",
	NoPeer:               "no_peer",
	UpstreamSendError:    "upstream_send_error",
	ClientSendError:      "client_send_error",
	SessionGone:          "session_gone",
	BadMAC1:              "bad_mac1",
	UnconfirmedRate:      "unconfirmed_rate",
	UnconfirmedTransport: "unconfirmed_transport",
	ClientRate:           "client_rate",
	ClientNotAllowed:     "client_not_allowed",
	SourceNotAllowed:     "source_not_allowed",
	MaxSessions:          "max_sessions",
	MaxSessionsPerIP:     "max_sessions_per_ip",
	NewSessionRate:       "new_session_rate",
	AdmissionOverload:    "admission_overload",
	ReplayedInitiation:   "replayed_initiation",
	QueueFull:            "queue_full",
	WARPType:             "warp_type",
	ZeroIDUnknownIndex:   "zero_id_unknown_index",
}

func (r Reason) String() string {
	if int(r) < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Reasons lists every reason, for exporting all of them (zeros included).
func Reasons() []Reason {
	rs := make([]Reason, NumReasons)
	for i := range rs {
		rs[i] = Reason(i)
	}
	return rs
}

// Direction names one of the four legs a datagram travels.
type Direction uint8

// Directions, from the client's point of view. Datagrams are counted where
// they arrive (From*, before anything is dropped) and where the relay hands
// them on to be sent (To*, before the kernel's verdict: a datagram the
// kernel refuses is counted there and also dropped, as UpstreamSendError or
// ClientSendError). Counters and Session count at the same points.
const (
	FromClient   Direction = iota // read on a listening socket
	ToUpstream                    // sent on a session's upstream socket
	FromUpstream                  // read on a session's upstream socket
	ToClient                      // sent back to the client on a listening socket
	numDirections
)

// NumDirections is the number of directions.
const NumDirections = int(numDirections)

var directionNames = [NumDirections]string{"from_client", "to_upstream", "from_upstream", "to_client"}

func (d Direction) String() string {
	if int(d) < NumDirections {
		return directionNames[d]
	}
	return "unknown"
}

// Counters are one relay's counters. The zero value is ready; all methods
// are safe for concurrent use.
type Counters struct {
	live      atomic.Int64
	events    [NumEvents]atomic.Uint64
	drops     [NumReasons]atomic.Uint64
	datagrams [NumDirections]atomic.Uint64
	bytes     [NumDirections]atomic.Uint64
}

// Drop counts n datagrams dropped for reason r.
func (c *Counters) Drop(r Reason, n int) { c.drops[r].Add(uint64(n)) }

// Move counts n datagrams of total size bytes moved in direction d.
func (c *Counters) Move(d Direction, n, bytes int) {
	c.datagrams[d].Add(uint64(n))
	c.bytes[d].Add(uint64(bytes))
}

// Dropped returns the number of datagrams dropped for reason r.
func (c *Counters) Dropped(r Reason) uint64 { return c.drops[r].Load() }

// Datagrams returns the number of datagrams moved in direction d.
func (c *Counters) Datagrams(d Direction) uint64 { return c.datagrams[d].Load() }

// Bytes returns the number of bytes moved in direction d.
func (c *Counters) Bytes(d Direction) uint64 { return c.bytes[d].Load() }

// TotalDropped sums the drops over every reason.
func (c *Counters) TotalDropped() uint64 {
	var t uint64
	for i := range c.drops {
		t += c.drops[i].Load()
	}
	return t
}

// Event is a session lifecycle event or relay event that is counted.
type Event uint8

// Counted events. Names are stable: they become metric label values.
const (
	SessionOpened   Event = iota // a session was admitted and its socket bound
	SessionExpired               // a session was idle for its timeout
	SessionFailed                // a session panicked and was stopped
	SessionClosed                // a session was stopped by shutdown or reload
	ClientRoamed                 // a session's replies moved to a new client address
	UpstreamChanged              // the upstream hostname resolved to a new address
	numEvents
)

// NumEvents is the number of counted events.
const NumEvents = int(numEvents)

var eventNames = [NumEvents]string{"opened", "expired", "failed", "closed", "roamed", "upstream_changed"}

func (e Event) String() string {
	if int(e) < NumEvents {
		return eventNames[e]
	}
	return "unknown"
}

// Count counts one event.
func (c *Counters) Count(e Event) { c.events[e].Add(1) }

// Events returns how many times e happened.
func (c *Counters) Events(e Event) uint64 { return c.events[e].Load() }

// SetLive records how many sessions the relay holds.
func (c *Counters) SetLive(n int) { c.live.Store(int64(n)) }

// Live returns how many sessions the relay holds.
func (c *Counters) Live() int { return int(c.live.Load()) }
