package relay

import (
	"fmt"
	"runtime"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/mailbox"
	"github.com/udpfwd/udpfwd/actors/session"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// worker is one of a relay's workers. Worker i owns socket i of every
// listening group (its listener reads it, its writer writes it), one
// supervisor, the sessions that supervisor spawns, and one poller that
// reads those sessions' upstream sockets. The kernel's steering program
// sends every datagram of a client ID to the same socket index (client ID
// mod the number of workers), so a client's datagrams, both ways, are
// handled by one worker: a datagram never crosses workers, and workers
// share nothing on the datagram path but what is global on purpose (the
// session caps, the admission budget, the replay table, the health record),
// each safe for concurrent use and touched per session, not per datagram.
//
// A worker is built and torn down with its relay, never alone: the kernel
// renumbers a group when one of its sockets closes, which would send the
// clients of one worker to another.
type worker struct {
	index int
	// counters is the worker's shard of the relay's counters: its
	// listeners, writers, supervisor and sessions count there, so that
	// workers never write the same cache line.
	counters *stats.Counters
	// backlog is the supervisor's queued batches, which the worker's
	// listeners wait on (actors/listener).
	backlog    mailbox.Backlog
	poller     *session.Poller
	supervisor *actor.PID
}

// newWorker starts worker i's poller; its supervisor, listeners and
// writers come later (Start).
func (r *Relay) newWorker(i int) (*worker, error) {
	p, err := session.NewPoller(r.system.Root, udpio.PollerConfig{})
	if err != nil {
		return nil, fmt.Errorf("worker %d: %w", i, err)
	}
	return &worker{index: i, counters: r.counters.Shard(), poller: p}, nil
}

// stopOnFailure is the supervision of a relay's top actors (supervisors,
// listeners, writers): an actor that fails is stopped, never restarted. A
// restarted supervisor would start with empty tables while its sessions
// were stopped outside the one "session ended" path; a restarted listener
// would read its socket twice. The relay then reports the actor down
// (Healthy), and its group stays whole.
var stopOnFailure = actor.NewOneForOneStrategy(0, time.Second, func(any) actor.Directive { return actor.StopDirective })

// workerCount is how many workers a relay of cfg runs: the configured
// number, or for "auto" one per CPU Go may use (GOMAXPROCS). A forward
// relay runs one (it has one outbound socket), and so does a relay that
// shares its port with other processes unless told otherwise (config
// refuses reuse_port with workers above 1: the kernel steers over all the
// processes' sockets, not by client ID).
func workerCount(cfg *config.Relay) int {
	switch {
	case cfg.Mode == config.ModeForward:
		return 1
	case cfg.Workers > 0:
		return cfg.Workers
	case cfg.ReusePort:
		return 1
	}
	return runtime.GOMAXPROCS(0)
}

// groupConfig is the listening group every address of cfg gets with n
// workers: one socket per worker, steered by client ID when there are
// several, shared with other processes if reuse_port says so.
func groupConfig(cfg *config.Relay, n int) udpio.GroupConfig {
	return udpio.GroupConfig{Sockets: n, Steer: n > 1, Shared: cfg.ReusePort, Options: socketOptions(cfg)}
}

// workerOf is the worker a client ID's datagrams reach among n: the one
// the kernel's steering program picks (udpio.GroupIndex). Sessions
// restored from the state file go there, and so does a Crash.
func workerOf(id wgproto.ClientID, n int) int {
	header := [4]byte{0, id[0], id[1], id[2]}
	return udpio.GroupIndex(header[:], n)
}
