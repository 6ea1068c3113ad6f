package supervisor

import (
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// pendingTimeout is how long an admission may wait for its policy's answer
// before another initiation from the client may ask again. Policies answer
// in microseconds; this only guards against one that never does.
const pendingTimeout = 5 * time.Second

// MaxAdmissions bounds the admissions in flight, those waiting for their
// policy's answer: each holds its initiation's buffer and its policy actors
// (AdmissionBytes). Policies answer in microseconds, but their answers wait
// while the supervisor routes: a burst of new clients read in full batches
// (a relay restarted without its state file, every client handshaking at
// once) puts 64 admissions in flight per batch before the first answer is
// handled, and more on a machine so busy that the policies' goroutines wait
// to run. 256 hold four such batches, leave room for a policy that takes
// 100 ms at the admission budget's rate (an operator's own, asking
// something outside), and cap what policies that never answer can hold at
// 3 MiB. Sessions restored at start are admitted past this bound (they
// come from the state file, which the session cap bounds), and count in it
// while they wait, so that new clients wait for the restore.
const MaxAdmissions = 256

// AdmissionBytes bounds what one admission in flight holds: its pending
// record, its initiation's buffer (udpio.BufferSize) and its policy actors;
// measured at 3.7 KB with one policy actor and 8.8 KB with a chain of
// three, so 12 KiB covers a chain of every built-in policy and an
// operator's own.
const AdmissionBytes = 12 << 10

// The admission path, in the order its checks run for a handshake
// initiation whose client ID has no session, cheapest and most specific
// first, all before anything is allocated or spawned for the client:
//
//  1. an upstream address to connect to (upstream_unresolved);
//  2. no admission already waiting for this client ID, or for a plain
//     client, from this address (admission_pending);
//  3. not a replay: the same initiation was not seen in the last
//     replay.TTL under another client ID (replayed_initiation), so that a
//     replay spends none of the budget below; a plain client's, which has
//     no client ID to tell a retransmission by, not at all;
//  4. the budget (admission_overload): fewer than MaxAdmissions in flight,
//     a token in the source's bucket and one in the relay-wide bucket
//     (limits.Admission);
//  5. the initiation is recorded in the replay table (a supervisor sharing
//     the table may have recorded it under another ID a moment before:
//     replayed_initiation);
//  6. the client's policy actor is spawned and asked (ask); its answer
//     opens the session (admitted) or refuses it (refused).
//
// What passes 1-5 is bounded by the budget, whatever arrives: at most
// limits.AdmissionRate new policy actors a second and MaxAdmissions at once.

// pending is an admission waiting for its policy's answer. It holds the
// handshake initiation that asked, to forward once admitted.
type pending struct {
	first    udpio.Datagram
	restore  *messages.RestoredSession // a saved session to re-open, instead of first
	listener uint8                     // the index of the listening socket first came by
	policy   *actor.PID
	since    time.Time
}

// admit asks a new policy actor whether client may open a session (k is
// its key: the client ID's, or a plain client's own), and keeps its
// initiation until the answer comes.
func (s *Supervisor) admit(ctx routeContext, k key, client wgproto.ClientID, d *udpio.Datagram, listener uint8) {
	if !s.upstream.IsValid() {
		s.drops[stats.UpstreamUnresolved]++
		return
	}
	now := s.now()
	if p := s.pending[k]; p != nil {
		if now.Sub(p.since) < pendingTimeout {
			s.drops[stats.AdmissionPending]++
			return
		}
		s.cfg.Logger.Warn("policy did not answer; asking again", clientField(client), addrField("from", d.Addr))
		s.dropAdmission(k, p, stats.PolicyRefused, ctx.Stop)
	}
	rk := s.replays.Key(d.Bytes())
	// A plain client's initiation is new or a replay: its client re-sends
	// from the address that has its admission or session, which never
	// gets here, and every retry is a new initiation.
	replayed := false
	if k.isPlain() {
		replayed = s.replays.Seen(rk, now)
	} else {
		replayed = s.replays.Replayed(rk, client, now)
	}
	if replayed {
		s.drops[stats.ReplayedInitiation]++
		return
	}
	if len(s.pending) >= MaxAdmissions || !s.budget.Allow(d.Addr.Addr(), now) {
		s.drops[stats.AdmissionOverload]++
		return
	}
	if !s.replays.Record(rk, client, now) {
		s.drops[stats.ReplayedInitiation]++
		return
	}
	p := &pending{first: *d, listener: listener}
	d.Buf = nil // moved into the pending admission
	if k.isPlain() {
		s.plain.byAddr[p.first.Addr] = k
	}
	s.ask(ctx, k, client, p.first.Addr, p)
}

// ask spawns the client's policy actor and asks it whether a session may
// open for the client at from; p waits for the answer, under k.
func (s *Supervisor) ask(ctx routeContext, k key, client wgproto.ClientID, from netip.AddrPort, p *pending) {
	p.since = s.now()
	p.policy = ctx.Spawn(s.cfg.Policy())
	s.pending[k] = p
	m := &messages.AdmitSession{Client: client, From: from}
	if k.isPlain() {
		m.Ticket = uint32(k)
	}
	ctx.Request(p.policy, m)
}

// answerKey is the key of the admission a policy's answer is about: its
// ticket (a plain client's), else its client ID.
func answerKey(client wgproto.ClientID, ticket uint32) key {
	if ticket != 0 {
		return key(ticket)
	}
	return idKey(client)
}

// dropAdmission is the one way an admission ends without a session: the
// policy refused it, did not answer, failed, or no upstream socket could be
// opened for it, or the relay is stopping. It forgets the admission,
// returns the held initiation's buffer (a restore holds none), stops the
// policy actor (stop is nil where protoactor stops it anyway), and counts
// the admission as one datagram dropped for reason.
func (s *Supervisor) dropAdmission(k key, p *pending, reason stats.Reason, stop func(*actor.PID)) {
	delete(s.pending, k)
	if k.isPlain() {
		s.plain.unadmit(p.first.Addr, k)
	}
	udpio.PutBuffer(p.first.Buf) // nil for a restore: PutBuffer ignores it
	p.first.Buf = nil
	if stop != nil {
		stop(p.policy)
	}
	s.cfg.Counters.Drop(reason, 1)
}

// refused ends an admission its policy refused.
func (s *Supervisor) refused(ctx actor.Context, m *messages.SessionRefused) {
	k := answerKey(m.Client, m.Ticket)
	p := s.pending[k]
	if p == nil {
		return
	}
	reason, ok := refusalReason[m.Reason]
	if !ok {
		reason = stats.PolicyRefused
	}
	s.cfg.Logger.Debug("session refused", clientField(m.Client), zap.String("reason", m.Reason),
		zap.Bool("restored", p.restore != nil))
	if p.restore == nil && warned(reason) {
		s.warn.source(reason, p.first.Addr.Addr(), s.now)
	}
	s.dropAdmission(k, p, reason, ctx.Stop)
}

// refusalReason maps the relay's own policies' reasons to drop reasons.
var refusalReason = map[string]stats.Reason{
	messages.RefusedClientNotAllowed: stats.ClientNotAllowed,
	messages.RefusedSourceDenied:     stats.SourceNotAllowed,
	messages.RefusedSourceNotAllowed: stats.SourceNotAllowed,
	messages.RefusedMaxSessions:      stats.MaxSessions,
	messages.RefusedMaxSessionsPerIP: stats.MaxSessionsPerIP,
	messages.RefusedNewSessionRate:   stats.NewSessionRate,
}

// admitted opens the session its policy admitted: on a new upstream socket,
// with the initiation that asked as its first datagram (or, for a restore,
// on its old socket: reopen).
func (s *Supervisor) admitted(ctx actor.Context, k key) {
	p := s.pending[k]
	if p == nil {
		return
	}
	if p.restore != nil {
		s.reopen(ctx, k, p)
		return
	}
	var client wgproto.ClientID // a plain client has none
	if !k.isPlain() {
		client = keyID(k)
	} else if !s.cfg.Clients.TrackZeroID {
		// A reload stopped tracking plain clients while it waited.
		s.dropAdmission(k, p, stats.ZeroClientID, ctx.Stop)
		return
	}
	endpoint, conn, err := s.dialNew()
	if err != nil {
		s.cfg.Logger.Warn("open upstream socket", clientField(client), zap.Error(err))
		s.dropAdmission(k, p, stats.UpstreamBindFailed, ctx.Stop)
		return
	}
	delete(s.pending, k)
	e := s.spawn(ctx, newSession{
		key: k, client: client, from: p.first.Addr, listener: p.listener, conn: conn,
		idle: s.cfg.IdleTimeout, policy: p.policy, endpoint: endpoint,
	})
	b := udpio.GetBatch()
	b.Listener = p.listener
	b.Add(p.first)
	ctx.Send(e.pid, (*messages.ClientDatagrams)(b))
}

// policyFailed ends the admissions whose policy actor failed; protoactor
// has stopped it already (HandleFailure).
func (s *Supervisor) policyFailed(child *actor.PID) {
	for k, p := range s.pending {
		if p.policy.Id == child.Id {
			s.dropAdmission(k, p, stats.PolicyRefused, nil)
		}
	}
}
