// Package relay assembles one relay from the actor kinds: workers, each
// with a listener and a writer for its socket of every listening address,
// one session supervisor, the sessions it spawns and one poller that reads
// their upstream sockets. It is what the udpfwd command, the warpsim demo
// and the end-to-end tests start.
//
//	client ──► listener ──► supervisor ──► session ──► upstream
//	client ◄── writer   ◄───────────────── session ◄── poller ◄── upstream
//
// # Workers
//
// A relay runs N workers (--workers, auto: one per CPU Go may use). Each
// listening address is a udpio.ListenGroup of N sockets on the same port;
// with N > 1 the kernel runs a steering program on every datagram that
// picks socket (client ID mod N), so all of a client ID's datagrams, from
// any address it roams to, reach worker (ID mod N): a datagram never
// crosses workers, and a session lives and dies in one worker. Zero-ID
// datagrams (plain clients, --zero-id track) all land on worker 0. What is
// global stays global, touched per session and not per datagram: the caps,
// the admission budget, the replay table, the endpoints' health
// (internal/pool: an endpoint one worker's sessions find dead is skipped by
// every worker's new sessions), the counters (one shard per worker, read as
// their sum), the health record, the state file, the admin API (every
// worker's sessions) and reload. A worker is never restarted alone: closing one
// socket of a group renumbers the others, so the relay's top actors are
// stopped, never restarted, when they fail (Healthy reports them), and the
// groups are built and closed whole; a reload that changes the number of
// workers starts the relay anew, its sessions kept on their upstream ports
// (ErrRestart). Sessions restored from the state file go to the worker
// their client ID steers to.
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
//   - A listener's reader, one per listening socket of each worker
//     (actors/listener). It reads a batch with recvmmsg and sends it to its
//     worker's supervisor, which
//     routes it inline and sends each session its part; the sessions run
//     inline too and write upstream with sendmmsg. Session events these
//     raise (ClientRoamed) are published, and their subscribers run, here.
//     While the supervisor runs on another goroutine and batches queue for
//     it, the reader waits (up to 5 ms) before it reads again.
//   - A worker's poller loop, one per worker (actors/session reader.go,
//     udpio.Poller): one epoll set holds the upstream sockets of the
//     worker's sessions; the loop reads the ready ones in batches and sends
//     each batch to its session, which addresses it inline and hands it to
//     a writer, which writes it to the client inline. Writers run almost
//     only here. An idle session costs no goroutine and no wake-up. A
//     session registers its socket as it starts and removes it before it
//     closes it; one that moves to another upstream endpoint removes the
//     old socket and registers the new one.
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
// and the udpio.Conn sockets, each read by one goroutine (a listener's
// reader or a poller's loop) and written by whichever goroutine runs its one writer
// (the writer actor, or the session), which alone switches its GSO.
package relay
