// Package cluster joins relay nodes into one protoactor-go cluster, so that
// a node that receives datagrams of a client whose session another node
// owns hands them to that node (udpfwd issue 15). It builds on protoactor's
// cluster and remote, not on a protocol of its own: membership comes from
// this package's static provider (static.go: fixed peers polled over
// HTTP) or protoactor's etcd provider, and every
// cross-node message is a protoactor remote message (protobuf, clusterpb).
//
// # Sessions stay where they were born
//
// A session is created by the node that admitted its client's first
// handshake initiation, because that node holds the session's upstream
// socket: moving the session would change the port the upstream sees and
// break the tunnel. protoactor's only identity lookup (disthash) does the
// opposite: it activates every identity on its rendezvous-hash owner and
// moves it when a node joins. So this package implements
// cluster.IdentityLookup itself as a first-seen lookup:
//
//   - The session's cluster identity is its Key (relay name and client ID,
//     "relay/hex") with kind SessionKind. The node that admitted it calls Node.Register: the
//     entry goes to a directory on the key's rendezvous owners among the
//     current members (the member protoactor's Rendezvous would pick, and
//     the next one in the same ranking, so that one membership change never
//     leaves a key without a directory that knows it). The first
//     registration wins; a second node's registration is answered with the
//     first one's PID.
//   - Get (IdentityLookup.Get, and Node.Lookup through the cluster's PID
//     cache) only looks up: it returns the registered PID or nil and never
//     activates anything, on the caller's node or elsewhere. A node that
//     gets a transport datagram for an unknown client therefore creates
//     nothing. (disthash's Get, in contrast, asks the owner to activate the
//     identity there; the removed partition lookup activated it on the
//     caller.) The cluster kind SessionKind is registered only so that
//     members advertise it; its props are never spawned.
//   - The directory is soft state. On every topology change each node
//     re-registers its own live sessions with their owners under the new
//     membership, and each directory drops the entries it no longer owns and
//     those of members that left. A node joining therefore moves no session
//     (only directory entries move), and a node leaving takes only its own
//     sessions with it: their entries disappear, and lookups never return a
//     PID on a node that is not a member.
//   - Node.Unregister removes an entry when its session ends; a datagram
//     that still reaches a dead session is answered with Gone, which drops
//     the sender's cached PID.
//
// # Datagrams cross nodes in batches
//
// Node.Forward (and ForwardRead, which coalesces one read batch per client)
// sends up to 64 datagrams of one client as one protobuf Batch over remote
// to the owning node, whose inbox actor decodes them into a pooled
// udpio.Batch and delivers RemoteDatagrams to the session. Node.Reply sends
// replies back the same way for the ingress reply mode (RemoteReplies). Per
// peer a link actor keeps at most linkWindow batches unacknowledged (the
// receiver acknowledges every ackEvery-th) and linkQueue more waiting, and
// drops and counts beyond that: remote's own queue is unbounded and never
// pushes back, so the bound has to be ours. Remote's endpoint-writer batch
// and gRPC's message limits are set so that one gRPC message never exceeds
// the limit (the pinned default loses messages silently past 4 MB).
//
// # Goroutines
//
// Node's methods may be called from any goroutine. Register and Lookup (on a
// cache miss) wait for a remote request; call them off a hot actor, or from
// an actor that can afford about 200 µs. The directory, inbox and link
// actors run on protoactor's dispatcher. Topology events are handled on the
// membership provider's goroutine, which then publishes MemberJoined and
// MemberLeft on the actor system's event stream.
package cluster
