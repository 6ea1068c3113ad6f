package session

import (
	"encoding/json"
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/roam"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Where replies go: s.peer (internal/roam) decides; this file restores and
// saves what it knows, and reports when the client moves.

// restoreRoam brings back roaming state saved by an earlier run, or starts
// from the address that opened the session.
func (s *Session) restoreRoam(now time.Time) {
	if len(s.cfg.Roam) > 0 {
		var st roam.State
		err := json.Unmarshal(s.cfg.Roam, &st)
		if err == nil {
			err = s.peer.Restore(st)
		}
		if err == nil {
			return
		}
		s.cfg.Logger.Warn("saved roaming state not restored", zap.Error(err))
	}
	s.peer.FromClient(now, wgproto.Header{}, s.cfg.Info.ClientAddr, s.cfg.Listener)
}

// saveRoam hands the roaming state to Stats, from which the state file is
// written. It runs when the state changed: on a handshake or a roam.
func (s *Session) saveRoam() {
	s.roamChanged = false
	if s.cfg.Forward {
		return
	}
	b, err := json.Marshal(s.peer.State())
	if err != nil {
		s.cfg.Logger.Warn("encode roaming state", zap.Error(err))
		return
	}
	s.cfg.Stats.SetSaved(b)
}

// roamed reports that replies now go to a new client address: the session
// record and the counter move first, then the event is published, so that
// whoever sees the event sees them moved. For a forward only the record
// moves.
func (s *Session) roamed(ctx actor.Context, from netip.AddrPort) {
	info := s.info()
	s.cfg.Stats.SetClientAddr(info.ClientAddr)
	if s.cfg.Forward {
		// A forward's replies follow its newest client: that is its
		// nature, not a session event (it has no client ID to log).
		return
	}
	s.roamChanged = true
	if s.cfg.Tracked {
		s.confirmed(ctx, info.ClientAddr)
	}
	s.cfg.Counters.Count(stats.ClientRoamed)
	s.cfg.Logger.Debug("client roamed", zap.Stringer("from", from), zap.Stringer("to", info.ClientAddr))
	ctx.ActorSystem().EventStream.Publish(&messages.ClientRoamed{SessionInfo: info, From: from, Followed: s.peer.Following()})
}
