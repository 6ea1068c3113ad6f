package session

import (
	"net/netip"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// A tracked plain client's session (zero_id: track) and a session that
// carries datagrams outside WireGuard's framing (message_types: any).
//
// A plain client's datagrams carry no client ID, so the supervisor finds
// its session by the indexes the upstream assigns it and by its client's
// confirmed address (actors/supervisor, plain.go). The session sees both
// first: it tells the supervisor each index its roam.Peer learns, before
// the reply that carries the index leaves for the client (so the client
// cannot use an index the supervisor does not know yet), and each move of
// the confirmed address. Nothing is sent per datagram.
//
// With stamp_client_id, the session writes that client ID into bytes 1..3
// of everything it sends upstream (WARP computes mac1 with them zero, so
// handshakes stay valid) and clears them in everything it sends back: the
// plain client's WireGuard (the Linux kernel, wireguard-go) drops a
// datagram whose reserved bytes are not zero, and WARP's servers write the
// client ID back into their replies. It is the one place the relay changes
// a datagram.

// learned tells the supervisor that the upstream assigned the session
// index.
func (s *Session) learned(ctx actor.Context, index uint32) {
	ctx.Send(ctx.Parent(), &messages.IndexLearned{Handle: s.cfg.Handle, Index: index})
}

// confirmed tells the supervisor that the client's confirmed address is
// now addr.
func (s *Session) confirmed(ctx actor.Context, addr netip.AddrPort) {
	ctx.Send(ctx.Parent(), &messages.ClientConfirmed{Handle: s.cfg.Handle, Addr: addr})
}

// stamp writes the stamp into a datagram on its way upstream.
func (s *Session) stamp(d *udpio.Datagram) {
	if !s.cfg.Stamp.IsZero() {
		wgproto.SetClient(d.Bytes(), s.cfg.Stamp)
	}
}

// unstamp clears bytes 1..3 of a reply on its way to a stamped client.
func (s *Session) unstamp(d *udpio.Datagram) {
	if !s.cfg.Stamp.IsZero() {
		wgproto.SetClient(d.Bytes(), wgproto.ClientID{})
	}
}

// deviated records that the client, from its confirmed address, sent a
// datagram outside WireGuard's framing (message_types: any let it
// through). Its exchange cannot be read, so roam can no longer tell the
// client's datagrams from forged ones: from now on the session follows its
// client's newest address, as the seed did for every session. Such a
// datagram from any other address is forwarded (within the budget of
// unconfirmed sources) but changes nothing: it could be anyone's.
func (s *Session) deviated() {
	if !s.peer.Forward {
		s.peer.Forward = true
		s.cfg.Logger.Debug("datagram outside WireGuard's framing: the session follows its client's newest address from now on")
	}
}
