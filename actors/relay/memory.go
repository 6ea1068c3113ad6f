package relay

import (
	"github.com/udpfwd/udpfwd/actors/session"
	"github.com/udpfwd/udpfwd/actors/supervisor"
	"github.com/udpfwd/udpfwd/actors/writer"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/replay"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// fullBatch is the most one batch holds: itself and a buffer in each slot.
const fullBatch = udpio.BatchSize + udpio.MaxBatch*udpio.BufferSize

// MemoryBound is the most memory a WireGuard-mode relay with listeners
// listening sockets holds beyond what its live sessions need, whatever
// arrives: every queue on the datagram and admission paths is bounded, and
// so is every table, and nothing else grows with what is sent to it. The
// README's Security section derives it, term by term:
//
//   - each listening socket: the batch its listener reads into, its
//     writer's queue (writer.QueueBytes) and the batch the writer stages;
//   - the supervisor's queue (supervisor.QueueBytes), the batch it routes
//     and the parts of it it builds for sessions (a batch each);
//   - the admissions in flight (supervisor.MaxAdmissions of
//     supervisor.AdmissionBytes);
//   - the replay table, the admission budget's table of sources, the
//     Caps policy's rate limiters (--new-sessions-per-ip) and the sources
//     the supervisor has warned about (supervisor.WarnBytes).
//
// The Go heap in use stays under it, less the memory the process had
// before; its garbage collector lets the heap grow to about twice what is
// in use before collecting (GOGC=100), so resident memory can be up to that
// more. What live sessions need is outside it: about 13 KB an idle session,
// and a busy one SessionBusyBytes more while its queue holds batches (a
// plain client's session, zero_id: track, also its entries in the
// supervisor's index and address tables, a few hundred bytes).
func MemoryBound(listeners int) int {
	perListener := fullBatch + writer.QueueBytes + fullBatch
	routing := supervisor.QueueBytes + fullBatch + udpio.MaxBatch*udpio.BatchSize
	admissions := supervisor.MaxAdmissions * supervisor.AdmissionBytes
	tables := replay.Bytes(replay.Entries) + limits.AdmissionBytes(limits.AdmissionSources) + limits.CapsLimiterBytes +
		supervisor.WarnBytes()
	return listeners*perListener + routing + admissions + tables
}

// SessionBusyBytes is the most a session holds beyond its idle cost while
// it is busy: its queue (session.QueueBytes) and the batch it stages for
// its next write upstream.
const SessionBusyBytes = session.QueueBytes + fullBatch
