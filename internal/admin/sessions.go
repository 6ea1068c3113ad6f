package admin

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Page sizes of /sessions.
const (
	// DefaultPageLimit is how many sessions one /sessions answer holds when
	// ?limit= is not given: a few hundred KB of JSON.
	DefaultPageLimit = 1000
	// MaxPageLimit caps ?limit=, so that no one request encodes megabytes.
	MaxPageLimit = 5000
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

// Forward is a relay of static forward mode as it reports itself to the
// admin listener: not a session (it has no client ID and never expires)
// but its one outbound socket, the client address it last heard from and
// what it has moved.
type Forward struct {
	// Rule is where the rule was written ("rules:4", "rules:4:2"), if
	// known.
	Rule   string
	Listen netip.AddrPort
	// ClientAddr is where replies go: the last client address that sent;
	// the zero value before any did.
	ClientAddr netip.AddrPort
	// UpstreamLocal is the outbound socket's address, Upstream where it
	// sends.
	UpstreamLocal netip.AddrPort
	Upstream      netip.AddrPort
	Stats         stats.SessionSnapshot
}

// ForwardReporter is implemented by a Relay that may be a static forward:
// AdminForward reports it (nil for a relay of another mode), and /sessions
// lists it under "forwards", apart from the sessions.
type ForwardReporter interface {
	AdminForward(ctx context.Context) (*Forward, error)
}

// SessionsReply is the JSON body of GET /sessions: one page of sessions.
type SessionsReply struct {
	// Time is when the listener answered; the ages are relative to it.
	Time time.Time `json:"time"`
	// SnapshotTime is when the oldest relay snapshot this page comes from
	// was taken: the counters and last-seen times are as of then.
	SnapshotTime time.Time `json:"snapshot_time,omitzero"`
	// Sessions are sorted by relay, client ID, then UUID.
	Sessions []SessionRecord `json:"sessions"`
	// Forwards are the relays of static forward mode, by relay name: they
	// have no sessions. Only the first page lists them.
	Forwards []ForwardRecord `json:"forwards,omitempty"`
	// Errors lists relays that did not answer in time; their sessions are
	// missing from Sessions.
	Errors []RelayError `json:"errors,omitempty"`
	// Next, while more sessions follow, is the relative URL of the next
	// page ("?after=...&limit=..."; it keeps ?relay=). Absent on the last
	// page.
	Next string `json:"next,omitempty"`
}

// SessionRecord is one session in /sessions.
type SessionRecord struct {
	Relay          string    `json:"relay"`
	UUID           string    `json:"uuid"`
	ClientID       string    `json:"client_id"`        // hex, as in logs: a81a15; "plain" for a plain WireGuard client, which has none
	ClientIDBase64 string    `json:"client_id_base64"` // as WARP tools show it: qBoV; empty for a plain client
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

// ForwardRecord is one static forward in /sessions: its rule, the client
// it last heard from, its outbound socket, and what it has moved.
type ForwardRecord struct {
	Relay string `json:"relay"`
	Rule  string `json:"rule,omitempty"` // where the rule was written: rules:4:2
	// Listen is the forward's listening socket.
	Listen string `json:"listen"`
	// ClientAddr is the last client address that sent, where replies go;
	// empty before any did.
	ClientAddr string `json:"client_addr"`
	// UpstreamLocal is the outbound socket, Upstream where it sends.
	UpstreamLocal       string     `json:"upstream_local"`
	Upstream            string     `json:"upstream"`
	Created             time.Time  `json:"created"`
	AgeSeconds          float64    `json:"age_seconds"`
	LastFromClient      time.Time  `json:"last_from_client"`
	IdleClientSeconds   float64    `json:"idle_client_seconds"`
	LastFromUpstream    time.Time  `json:"last_from_upstream"`
	IdleUpstreamSeconds float64    `json:"idle_upstream_seconds"`
	Datagrams           Directions `json:"datagrams"`
	Bytes               Directions `json:"bytes"`
}

// Key is the record's place in the order of /sessions, the value of
// ?after= that starts the page after it: "RELAY/CLIENT_ID/UUID".
func (r *SessionRecord) Key() string { return r.Relay + "/" + r.ClientID + "/" + r.UUID }

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
// (an unknown ?relay=, a bad ?limit= or ?after=, a missing token).
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

// AddrString writes an address as people read it: an IPv4-mapped IPv6
// address (a v4 client on a dual-stack [::] socket) as plain IPv4,
// "127.0.0.1:5000" rather than "[::ffff:127.0.0.1]:5000".
func AddrString(a netip.AddrPort) string {
	if !a.IsValid() {
		return a.String()
	}
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()).String()
}

// record turns a relay's session into its JSON form, without the ages,
// which are filled in when a page is served.
func record(relay string, s Session) SessionRecord {
	st := s.Stats
	return SessionRecord{
		Relay:            relay,
		UUID:             s.ID.String(),
		ClientID:         clientID(s.Client),
		ClientIDBase64:   clientIDBase64(s.Client),
		ClientAddr:       AddrString(s.ClientAddr),
		UpstreamLocal:    AddrString(s.UpstreamLocal),
		Upstream:         AddrString(s.Upstream),
		Created:          stamp(st.Created),
		LastFromClient:   stamp(st.LastClient),
		LastFromUpstream: stamp(st.LastUpstream),
		Datagrams:        directions(st.Datagrams),
		Bytes:            directions(st.Bytes),
	}
}

// clientID is a session's client ID in hex, or "plain" for a plain
// WireGuard client's session (zero_id: track), which has none.
func clientID(id wgproto.ClientID) string {
	if id.IsZero() {
		return "plain"
	}
	return id.String()
}

// clientIDBase64 is a session's client ID in base64, empty for a plain
// client.
func clientIDBase64(id wgproto.ClientID) string {
	if id.IsZero() {
		return ""
	}
	return id.Base64()
}

// forwardRecord turns a relay's forward into its JSON form, without the
// ages.
func forwardRecord(relay string, f *Forward) ForwardRecord {
	st := f.Stats
	r := ForwardRecord{
		Relay:            relay,
		Rule:             f.Rule,
		Listen:           AddrString(f.Listen),
		UpstreamLocal:    AddrString(f.UpstreamLocal),
		Upstream:         AddrString(f.Upstream),
		Created:          stamp(st.Created),
		LastFromClient:   stamp(st.LastClient),
		LastFromUpstream: stamp(st.LastUpstream),
		Datagrams:        directions(st.Datagrams),
		Bytes:            directions(st.Bytes),
	}
	if f.ClientAddr.IsValid() {
		r.ClientAddr = AddrString(f.ClientAddr)
	}
	return r
}

// agedForward returns r with its ages at now.
func agedForward(r ForwardRecord, now time.Time) ForwardRecord {
	r.AgeSeconds = seconds(now.Sub(r.Created))
	r.IdleClientSeconds = seconds(now.Sub(r.LastFromClient))
	r.IdleUpstreamSeconds = seconds(now.Sub(r.LastFromUpstream))
	return r
}

// aged returns r with its ages at now.
func aged(r SessionRecord, now time.Time) SessionRecord {
	r.AgeSeconds = seconds(now.Sub(r.Created))
	r.IdleClientSeconds = seconds(now.Sub(r.LastFromClient))
	r.IdleUpstreamSeconds = seconds(now.Sub(r.LastFromUpstream))
	return r
}

// compareRecords orders records by relay, client ID, then UUID.
func compareRecords(a, b *SessionRecord) int {
	return cmp.Or(cmp.Compare(a.Relay, b.Relay), cmp.Compare(a.ClientID, b.ClientID), cmp.Compare(a.UUID, b.UUID))
}

// parseAfter reads ?after=RELAY/CLIENT_ID/UUID into a record holding just
// those fields. The relay name may itself contain '/'.
func parseAfter(s string) (SessionRecord, error) {
	bad := fmt.Errorf("after %q: want RELAY/CLIENT_ID/UUID, the key of the last session of the previous page", s)
	rest, id, ok1 := cutLast(s, "/")
	relay, client, ok2 := cutLast(rest, "/")
	if !ok1 || !ok2 || relay == "" {
		return SessionRecord{}, bad
	}
	return SessionRecord{Relay: relay, ClientID: client, UUID: id}, nil
}

func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

// snapshot is one relay's sessions as listed at one moment, sorted.
type snapshot struct {
	taken time.Time       // when the listing was asked for
	rows  []SessionRecord // sorted by client ID, then UUID; ages unset
	fwd   *ForwardRecord  // the relay's forward, if it is one; ages unset
	err   error
	done  chan struct{} // closed once rows or err are set
}

// snapshots caches each relay's latest snapshot, by relay name.
type snapshots struct {
	mu      sync.Mutex
	byRelay map[string]*snapshot
	builds  sync.WaitGroup
	ctx     context.Context // ends at Shutdown; builds derive from it
	cancel  context.CancelFunc
}

func (c *snapshots) init() {
	c.byRelay = map[string]*snapshot{}
	c.ctx, c.cancel = context.WithCancel(context.Background())
}

// reset forgets every snapshot: the relays changed.
func (c *snapshots) reset() {
	c.mu.Lock()
	clear(c.byRelay)
	c.mu.Unlock()
}

// close cancels snapshots being built and waits for them.
func (c *snapshots) close() {
	c.cancel()
	c.builds.Wait()
}

// snapshot returns rl's snapshot: the cached one if it was taken less than
// SnapshotInterval ago or is being built (then it waits for it), else a new
// one. However many requests arrive at once, each relay is asked at most
// once per interval. It returns early with ctx's error if ctx ends first.
func (s *Server) snapshot(ctx context.Context, rl Relay) (*snapshot, error) {
	name := rl.Name()
	now := s.opts.Now()
	c := &s.snaps
	c.mu.Lock()
	sn := c.byRelay[name]
	if sn == nil || s.stale(sn, now) {
		sn = &snapshot{taken: now, done: make(chan struct{})}
		c.byRelay[name] = sn
		c.builds.Add(1)
		go s.build(rl, sn)
	}
	c.mu.Unlock()
	select {
	case <-sn.done:
		return sn, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// stale reports whether a finished snapshot is too old to serve at now. One
// still being built is never stale: its requesters wait for it.
func (s *Server) stale(sn *snapshot, now time.Time) bool {
	select {
	case <-sn.done:
		age := now.Sub(sn.taken)
		return age >= s.opts.SnapshotInterval || age < 0
	default:
		return false
	}
}

// build asks rl for its sessions, within SessionsTimeout, and fills sn.
// It runs on its own goroutine, so that a request that goes away does not
// cancel the listing others wait for.
func (s *Server) build(rl Relay, sn *snapshot) {
	defer s.snaps.builds.Done()
	defer close(sn.done)
	ctx, cancel := context.WithTimeout(s.snaps.ctx, s.opts.SessionsTimeout)
	defer cancel()
	ss, err := rl.AdminSessions(ctx)
	if err != nil {
		s.log.Warn("list sessions", zap.String("relay", rl.Name()), zap.Error(err))
		sn.err = err
		return
	}
	rows := make([]SessionRecord, len(ss))
	for i, x := range ss {
		rows[i] = record(rl.Name(), x)
	}
	slices.SortFunc(rows, func(a, b SessionRecord) int { return compareRecords(&a, &b) })
	if fr, ok := rl.(ForwardReporter); ok {
		f, err := fr.AdminForward(ctx)
		if err != nil {
			s.log.Warn("list forward", zap.String("relay", rl.Name()), zap.Error(err))
			sn.err = err
			return
		}
		if f != nil {
			r := forwardRecord(rl.Name(), f)
			sn.fwd = &r
		}
	}
	sn.rows = rows
}

// sessions serves GET /sessions[?relay=NAME][&limit=N][&after=KEY]: up to
// limit sessions after KEY, from each relay's snapshot. A relay whose
// snapshot failed is listed in Errors and the others are still shown.
func (s *Server) sessions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	relays := slices.Clone(s.currentRelays())
	slices.SortFunc(relays, func(a, b Relay) int { return cmp.Compare(a.Name(), b.Name()) })
	if name := q.Get("relay"); name != "" {
		i := slices.IndexFunc(relays, func(rl Relay) bool { return rl.Name() == name })
		if i < 0 {
			writeJSON(w, http.StatusNotFound, ErrorReply{Error: fmt.Sprintf("no relay named %q", name)})
			return
		}
		relays = relays[i : i+1]
	}
	limit := DefaultPageLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeJSON(w, http.StatusBadRequest, ErrorReply{Error: fmt.Sprintf("limit %q: want a number of sessions, 1..%d", v, MaxPageLimit)})
			return
		}
		limit = min(n, MaxPageLimit)
	}
	var after *SessionRecord
	if v := q.Get("after"); v != "" {
		a, err := parseAfter(v)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, ErrorReply{Error: err.Error()})
			return
		}
		after = &a
	}

	reply := SessionsReply{Sessions: []SessionRecord{}}
	if after == nil {
		// Every forward on the first page, whatever the sessions' paging:
		// there is one per forward relay.
		for _, rl := range relays {
			sn, err := s.snapshot(r.Context(), rl)
			if err != nil {
				return // the client went away
			}
			if sn.fwd != nil {
				reply.Forwards = append(reply.Forwards, *sn.fwd)
				if reply.SnapshotTime.IsZero() || sn.taken.Before(reply.SnapshotTime) {
					reply.SnapshotTime = sn.taken
				}
			}
		}
	}
	more := false
	for _, rl := range relays {
		if after != nil && rl.Name() < after.Relay {
			continue
		}
		sn, err := s.snapshot(r.Context(), rl)
		if err != nil {
			return // the client went away
		}
		if sn.err != nil {
			reply.Errors = append(reply.Errors, RelayError{Relay: rl.Name(), Error: sn.err.Error()})
			continue
		}
		if reply.SnapshotTime.IsZero() || sn.taken.Before(reply.SnapshotTime) {
			reply.SnapshotTime = sn.taken
		}
		rows := sn.rows
		if after != nil {
			i, _ := slices.BinarySearchFunc(rows, after, func(x SessionRecord, a *SessionRecord) int {
				if compareRecords(&x, a) <= 0 {
					return -1
				}
				return 1
			})
			rows = rows[i:]
		}
		room := limit - len(reply.Sessions)
		if len(rows) > room {
			rows, more = rows[:room], true
		}
		reply.Sessions = append(reply.Sessions, rows...)
		if more {
			break
		}
	}
	now := s.opts.Now()
	reply.Time = stamp(now)
	if !reply.SnapshotTime.IsZero() {
		reply.SnapshotTime = stamp(reply.SnapshotTime)
	}
	for i := range reply.Sessions {
		reply.Sessions[i] = aged(reply.Sessions[i], now)
	}
	for i := range reply.Forwards {
		reply.Forwards[i] = agedForward(reply.Forwards[i], now)
	}
	if more {
		next := url.Values{}
		if name := q.Get("relay"); name != "" {
			next.Set("relay", name)
		}
		next.Set("limit", strconv.Itoa(limit))
		next.Set("after", reply.Sessions[len(reply.Sessions)-1].Key())
		reply.Next = "?" + next.Encode()
	}
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
