// Package roam decides where a session's replies go: the one place that
// decides whether a datagram from a new client address moves the session.
// It does no I/O, so it can be tested and fuzzed on its own.
package roam

import (
	"net/netip"

	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Peer tracks a session's client address. The current rule is "follow the
// newest source": every datagram from the client moves the reply address to
// where it came from, which is what keeps a roaming client's tunnel alive.
//
// A Peer is owned by one session actor and is not safe for concurrent use.
type Peer struct {
	addr netip.AddrPort
	via  uint8
}

// Addr is the address replies currently go to (the zero value before the
// first datagram).
func (p *Peer) Addr() netip.AddrPort { return p.addr }

// Via is the listening socket replies currently leave by.
func (p *Peer) Via() uint8 { return p.via }

// FromClient records a datagram from the client with header h, sent from
// from to the relay's listening socket via. It reports whether the reply
// address moved away from an earlier one.
func (p *Peer) FromClient(h wgproto.Header, from netip.AddrPort, via uint8) (moved bool) {
	if p.addr == from && p.via == via {
		return false
	}
	moved = p.addr.IsValid()
	p.addr, p.via = from, via
	return moved
}

// FromUpstream records a reply from upstream with header h and returns the
// address to send it to and the listening socket to send it by; ok is false
// when there is none.
func (p *Peer) FromUpstream(h wgproto.Header) (to netip.AddrPort, via uint8, ok bool) {
	return p.addr, p.via, p.addr.IsValid()
}
