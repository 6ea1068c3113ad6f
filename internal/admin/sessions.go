package admin

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Session is one live session as a relay reports it to the admin listener.
type Session struct {
	ID     uuid.UUID
	Client wgproto.ClientID
	// ClientAddr is where replies go: the client's confirmed address.
	ClientAddr netip.AddrPort
	// UpstreamLocal is the session's upstream socket: the stable source
	// address and port the upstream sees.
	UpstreamLocal netip.AddrPort
	Upstream      netip.AddrPort
	Stats         stats.SessionSnapshot
}

// SessionsReply is the JSON body of GET /sessions.
type SessionsReply struct {
	// Time is when the listener answered; the ages are relative to it.
	Time time.Time `json:"time"`
	// Sessions are sorted by relay, client ID, then UUID.
	Sessions []SessionRecord `json:"sessions"`
	// Errors lists relays that did not answer in time; their sessions are
	// missing from Sessions.
	Errors []RelayError `json:"errors,omitempty"`
}

// SessionRecord is one session in /sessions.
type SessionRecord struct {
	Relay          string    `json:"relay"`
	UUID           string    `json:"uuid"`
	ClientID       string    `json:"client_id"`        // hex, as in logs: a81a15
	ClientIDBase64 string    `json:"client_id_base64"` // as WARP tools show it: qBoV
	ClientAddr     string    `json:"client_addr"`
	UpstreamLocal  string    `json:"upstream_local"`
	Upstream       string    `json:"upstream"`
	Created        time.Time `json:"created"`
	AgeSeconds     float64   `json:"age_seconds"`
	// LastFromClient is the newest datagram from the client's confirmed
	// address: the idle clock the session expires by (stats.Session).
	LastFromClient    time.Time `json:"last_from_client"`
	IdleClientSeconds float64   `json:"idle_client_seconds"`
	// LastFromUpstream is the newest datagram from upstream (the session's
	// start if none yet).
	LastFromUpstream    time.Time  `json:"last_from_upstream"`
	IdleUpstreamSeconds float64    `json:"idle_upstream_seconds"`
	Datagrams           Directions `json:"datagrams"`
	Bytes               Directions `json:"bytes"`
}

// Directions holds one count per direction; the JSON keys are the
// stats.Direction names, as in the metrics' direction label.
type Directions struct {
	FromClient   uint64 `json:"from_client"`
	ToUpstream   uint64 `json:"to_upstream"`
	FromUpstream uint64 `json:"from_upstream"`
	ToClient     uint64 `json:"to_client"`
}

func directions(v [stats.NumDirections]uint64) Directions {
	return Directions{
		FromClient:   v[stats.FromClient],
		ToUpstream:   v[stats.ToUpstream],
		FromUpstream: v[stats.FromUpstream],
		ToClient:     v[stats.ToClient],
	}
}

// RelayError is a relay that could not list its sessions.
type RelayError struct {
	Relay string `json:"relay"`
	Error string `json:"error"`
}

// ErrorReply is the JSON body of a /sessions request that failed as a whole
// (for example an unknown ?relay=).
type ErrorReply struct {
	Error string `json:"error"`
}

// seconds rounds d to milliseconds, never below zero (a clock step can put
// a timestamp after now).
func seconds(d time.Duration) float64 {
	return math.Max(0, math.Round(d.Seconds()*1000)/1000)
}

// stamp is t in UTC to the millisecond, without the monotonic reading.
func stamp(t time.Time) time.Time { return t.UTC().Round(time.Millisecond) }

// record turns a relay's session into its JSON form, with ages at now.
func record(relay string, s Session, now time.Time) SessionRecord {
	st := s.Stats
	return SessionRecord{
		Relay:               relay,
		UUID:                s.ID.String(),
		ClientID:            s.Client.String(),
		ClientIDBase64:      s.Client.Base64(),
		ClientAddr:          s.ClientAddr.String(),
		UpstreamLocal:       s.UpstreamLocal.String(),
		Upstream:            s.Upstream.String(),
		Created:             stamp(st.Created),
		AgeSeconds:          seconds(now.Sub(st.Created)),
		LastFromClient:      stamp(st.LastClient),
		IdleClientSeconds:   seconds(now.Sub(st.LastClient)),
		LastFromUpstream:    stamp(st.LastUpstream),
		IdleUpstreamSeconds: seconds(now.Sub(st.LastUpstream)),
		Datagrams:           directions(st.Datagrams),
		Bytes:               directions(st.Bytes),
	}
}

// sessions serves GET /sessions[?relay=NAME]. Relays are asked at once, each
// within SessionsTimeout; one that does not answer is listed in Errors and
// the others are still shown.
func (s *Server) sessions(w http.ResponseWriter, r *http.Request) {
	relays := s.currentRelays()
	if name := r.URL.Query().Get("relay"); name != "" {
		i := slices.IndexFunc(relays, func(rl Relay) bool { return rl.Name() == name })
		if i < 0 {
			writeJSON(w, http.StatusNotFound, ErrorReply{Error: fmt.Sprintf("no relay named %q", name)})
			return
		}
		relays = relays[i : i+1]
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.SessionsTimeout)
	defer cancel()

	type answer struct {
		sessions []Session
		err      error
	}
	answers := make([]answer, len(relays))
	var wg sync.WaitGroup
	for i, rl := range relays {
		wg.Go(func() {
			ss, err := rl.AdminSessions(ctx)
			answers[i] = answer{ss, err}
		})
	}
	wg.Wait()

	now := s.opts.Now()
	reply := SessionsReply{Time: stamp(now), Sessions: []SessionRecord{}}
	for i, rl := range relays {
		if err := answers[i].err; err != nil {
			s.log.Warn("list sessions", zap.String("relay", rl.Name()), zap.Error(err))
			reply.Errors = append(reply.Errors, RelayError{Relay: rl.Name(), Error: err.Error()})
			continue
		}
		for _, ss := range answers[i].sessions {
			reply.Sessions = append(reply.Sessions, record(rl.Name(), ss, now))
		}
	}
	slices.SortFunc(reply.Sessions, func(a, b SessionRecord) int {
		return cmp.Or(cmp.Compare(a.Relay, b.Relay), cmp.Compare(a.ClientID, b.ClientID), cmp.Compare(a.UUID, b.UUID))
	})
	slices.SortFunc(reply.Errors, func(a, b RelayError) int { return cmp.Compare(a.Relay, b.Relay) })
	writeJSON(w, http.StatusOK, reply)
}

// writeJSON writes v indented, for people reading it with curl.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n')) //nolint:errcheck // the client went away
}
