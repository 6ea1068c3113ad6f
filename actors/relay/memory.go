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
// listen addresses and workers workers holds beyond what its live sessions
// need, whatever arrives: every queue on the datagram and admission paths
// is bounded, and so is every table, and nothing else grows with what is
// sent to it. The README's Security section derives it, term by term:
//
//   - each listening socket (one per address and worker): the batch its
//     listener reads into, its writer's queue (writer.QueueBytes) and the
//     batch the writer stages;
//   - each worker's supervisor: its queue (supervisor.QueueBytes), the
//     batch it routes and the parts of it it builds for sessions (a batch
//     each), and its admissions in flight (supervisor.MaxAdmissions of
//     supervisor.AdmissionBytes);
//   - once for the relay: the upstream sockets dialled ahead for the next
//     admissions, shared by the workers (supervisor.SpareSockets of
//     supervisor.SpareBytes), the replay table, the admission budget's
//     table of sources and the Caps policy's rate limiters
//     (--new-sessions-per-ip);
//   - each worker's supervisor again: the sources it has warned about
//     (supervisor.WarnBytes).
//
// The Go heap in use stays under it, less the memory the process had
// before; its garbage collector lets the heap grow by a quarter of what is
// in use before collecting (the daemon's GC percent, 25, unless GOGC is
// set; Go's default 100 lets it double), so resident memory can be up to
// that more. What live sessions need is outside it: about 5 KB resident an
// idle session (README Performance, udpbench sessions), and a busy one
// SessionBusyBytes more while its queue holds batches (a plain client's
// session, zero_id: track, also its entries in the supervisor's index and
// address tables, a few hundred bytes).
func MemoryBound(listeners, workers int) int {
	perListener := fullBatch + writer.QueueBytes + fullBatch
	routing := supervisor.QueueBytes + fullBatch + udpio.MaxBatch*udpio.BatchSize
	admissions := supervisor.MaxAdmissions * supervisor.AdmissionBytes
	tables := replay.Bytes(replay.Entries) + limits.AdmissionBytes(limits.AdmissionSources) + limits.CapsLimiterBytes +
		supervisor.SpareSockets*supervisor.SpareBytes
	return workers*(listeners*perListener+routing+admissions+supervisor.WarnBytes()) + tables
}

// SessionBusyBytes is the most a session holds beyond its idle cost while
// it is busy: its queue (session.QueueBytes) and the batch it stages for
// its next write upstream.
const SessionBusyBytes = session.QueueBytes + fullBatch
