// Package relay assembles one relay from the actor kinds: for every
// listening socket a listener and a writer, one session supervisor, and the
// sessions it spawns. It is what the udpfwd command, the warpsim demo and
// the end-to-end tests start.
//
//	client ──► listener ──► supervisor ──► session ──► upstream
//	client ◄── writer   ◄───────────────── session ◄── upstream
//
// # Goroutines, and which actors run on them
//
// The supervisor, the sessions and the writers have no goroutine of their
// own. They use actors/mailbox's Inline dispatcher: an actor whose mailbox
// is idle runs in the goroutine that sends to it, one that is busy queues
// the message for the goroutine already running it. So each still handles
// one message at a time, in order, whichever goroutine that is, and a
// datagram crosses the relay without a goroutine hand-off. The listeners
// and the policy actors run on protoactor's default dispatcher.
//
// The goroutines of a relay, and what runs on each:
//
//   - A listener's reader, one per listening socket (actors/listener). It
//     reads a batch with recvmmsg and sends it to the supervisor, which
//     routes it inline and sends each session its part; the sessions run
//     inline too and write upstream with sendmmsg. Session events these
//     raise (ClientRoamed) are published, and their subscribers run, here.
//     While the supervisor runs on another goroutine and batches queue for
//     it, the reader waits (up to 5 ms) before it reads again.
//   - A session's reader, one per session (actors/session reader.go). It
//     reads the upstream's replies and sends them to its session, which
//     addresses them inline and hands them to a writer, which writes them
//     to the client inline. Writers run almost only here. A session that
//     moves to another upstream endpoint closes its socket, which ends its
//     reader, and starts one for the new socket.
//   - Handshake reports: a session tells the supervisor how each handshake
//     with its endpoint went (EndpointHandshake) from whichever goroutine
//     runs it, the supervisor keeps the endpoints' health there, and on a
//     session's MoveSession dials the new socket there and hands it over
//     (SwapUpstream); endpoint events (EndpointDown, EndpointUp,
//     SessionMoved) are published from it.
//   - The resolvers, one per upstream endpoint given by name
//     (Relay.resolveLoop): the supervisor runs inline on them for
//     UpstreamResolved.
//   - Timers: a session's idle timer (time.AfterFunc) sends it CheckIdle,
//     and the session runs inline on the timer's goroutine; if it is idle,
//     the supervisor runs there too for SessionIdle, ends the session and
//     publishes SessionExpired. protoactor's futures time out on timers too.
//   - protoactor's dispatcher: its goroutines run the listener actors
//     (Started, Stopping) and the policy actors. A policy's answer runs the
//     supervisor inline, which then opens the upstream socket and spawns the
//     session (whose Started runs inline there as well) and publishes
//     SessionOpened.
//   - Callers of the Relay's methods: Start's caller sends RestoreSessions;
//     Relay.Sessions (the admin listener's handlers, the state saver) runs
//     the supervisor inline for ListSessions, which copies its table there
//     and builds the list on a goroutine of its own; Reconfigure's caller (a
//     reload) runs the supervisor inline for Reconfigure, and the sessions
//     for ApplySettings and the writers for SocketSettings where they are
//     idle; Close's caller runs the supervisor's Stopping, and the
//     sessions' as protoactor stops them.
//   - In a cluster (WithCluster, cluster.go): the node's goroutines run
//     the supervisor inline for the answers to its lookups and
//     registrations (cluster.Located, cluster.Registered); protoactor
//     remote's delivers the datagrams other nodes forward to a session,
//     which runs inline there, and the replies they send back through
//     this relay to its replier, which hands them to a writer.
//   - A scrape of /metrics reads the listening sockets' kernel drop
//     counters on the scraper's goroutine (MetricsStatus); no actor runs.
//
// # Reload in place
//
// Reconfigure changes a running relay's settings without closing its
// listening sockets or any session's upstream socket (see its doc for each
// setting). A listening socket's index, which every batch and every
// session's roaming state carries to pick the writer of its replies, is
// fixed for the relay's life: a reload that removes a socket leaves its
// index empty (its writer lives on until Close, so a reply sent just before
// a session heard of the removal is counted, not lost as a dead letter),
// and a socket it adds takes a new index. The state file numbers sockets by
// their place in the listen list, as the next start binds them
// (Snapshot translates).
//
// Whatever goroutine runs an actor, state shared between actors is only
// what is safe for concurrent use: stats.Counters and stats.Session
// (atomics), metrics.Status (atomics and a mutex), limits.Caps (a mutex),
// and the udpio.Conn sockets, each read by one goroutine (a listener's or
// session's reader) and written by whichever goroutine runs its one writer
// (the writer actor, or the session), which alone switches its GSO.
package relay
