// Package warptest is a test bed that imitates Cloudflare WARP closely enough to
// show why roaming WireGuard clients break behind an ECMP-hashed edge, and that
// a relay keeping one source port per client ID fixes it.
//
// Everything runs in one process on loopback UDP sockets: the WireGuard
// devices are real wireguard-go devices, and their tunnels end in userspace
// gVisor TCP/IP stacks (no TUN device, no root). The tunnel addresses
// ([EdgeTunnelAddr], client addresses in 10.77.0.0/16) exist only inside those
// userspace stacks; the only real sockets are UDP sockets on 127.0.0.1.
//
// The bed has two halves:
//
//   - [Edge]: N WireGuard servers (default 3) that share one key pair, each on
//     its own userspace stack serving TCP (a sink that verifies what it gets, a
//     source of a deterministic stream, an echo), behind a [Router] that hashes
//     every datagram's UDP 4-tuple to a server, as WARP's ECMP does. Like WARP's
//     servers they accept a client ID in header bytes 1..3 and echo it back.
//     An edge may answer on several endpoint addresses (a router each, in
//     front of the same servers), and a router can go dark
//     ([Router.SetDark]), as an unreachable WARP address does.
//   - [Client]: a wireguard-go device whose [StampBind] writes a client ID into
//     bytes 1..3 of every datagram after wireguard-go has computed the MACs, as
//     WARP clients do, and that can move to a new local UDP port mid-connection
//     ([Client.Roam]) and announce itself with a keepalive at once, or send
//     to another endpoint from now on ([Client.SetEndpoint]).
//
// [Transfer] runs a verified download or upload through a client and reports
// progress, so tests and the warpsim demo can roam at chosen points and tell a
// completed stream from a stalled one.
package warptest
