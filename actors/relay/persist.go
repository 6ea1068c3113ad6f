package relay

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/roam"
	"github.com/udpfwd/udpfwd/internal/state"
)

// WithRestore makes Start re-open sessions saved by an earlier run (or by
// this relay before a reload), each on its old upstream port. A saved
// session must obey the relay's configuration as it is now (see
// checkRestore): one saved for another upstream is left out, with a
// warning, since its 4-tuple could not be kept; one whose upstream socket
// the configuration would not bind today is re-bound on a port that obeys
// it, and reported as rebound.
func WithRestore(saved []state.Session) Option {
	return func(r *Relay) { r.restore = saved }
}

// restoreMessage turns saved sessions into the supervisor's message,
// leaving out (and logging) what cannot be restored into this relay.
func (r *Relay) restoreMessage() *messages.RestoreSessions {
	rules := r.restoreRules()
	m := &messages.RestoreSessions{}
	for _, s := range r.restore {
		rebind, err := checkRestore(s, rules)
		if err != nil {
			r.log.Warn("saved session not restored", zap.Stringer("session", s.ID), zap.Stringer("client", s.Client), zap.Error(err))
			continue
		}
		m.Sessions = append(m.Sessions, messages.RestoredSession{
			Info: messages.SessionInfo{
				Relay: r.name, Session: s.ID, Client: s.Client, ClientAddr: unmap(s.ClientAddr),
				UpstreamLocal: s.UpstreamLocal, Upstream: s.Upstream,
			},
			Created: s.Created,
			Roam:    placeListener(s.Roam, s.Listen, rules.listen),
			Rebind:  rebind,
		})
		// The endpoint it was on: one of the configured ones (checkRestore).
		m.Sessions[len(m.Sessions)-1].Info.Endpoint = s.UpstreamConfig
	}
	return m
}

// restoreRules is what of today's configuration a saved session must obey,
// as plain values.
type restoreRules struct {
	// upstream is the configured upstream, "host:port" as written: the
	// first endpoint of a pool, whose others are more.
	upstream string
	more     []string
	// listen are the listen addresses as configured, in the order the
	// relay numbers its listening sockets at start.
	listen []netip.AddrPort
	// bind is upstream_bind's address; invalid (or unspecified) lets the
	// kernel choose, so that any local address obeys it.
	bind netip.Addr
	// ports is upstream_ports, inclusive; zero if not set.
	ports [2]uint16
}

// restoreRules takes the rules from the relay's configuration.
func (r *Relay) restoreRules() restoreRules {
	cfg := r.Config()
	rules := restoreRules{
		upstream: cfg.Upstream.String(),
		listen:   cfg.Listen,
		bind:     cfg.UpstreamBind.Addr(),
		ports:    [2]uint16{cfg.UpstreamPorts.First, cfg.UpstreamPorts.Last},
	}
	for _, h := range cfg.MoreUpstreams {
		rules.more = append(rules.more, h.String())
	}
	return rules
}

// checkRestore decides what becomes of a saved session under today's
// configuration. An error leaves it out: it was saved for another upstream
// (its endpoint is not among the configured ones any more), its upstream
// address is not that endpoint's (a literal address that differs, or
// another port), or it has no usable client ID or upstream address. A non-empty rebind keeps it but on
// a new upstream port, as a new session would get one, and says why: its
// saved socket address is one today's configuration would not bind (no
// port, an address that is not upstream_bind, a port outside
// upstream_ports).
//
// An upstream configured by name is checked by port only: the saved address
// is what the name resolved to when the session opened, kept so that the
// session stays with that server while the name's answers change.
func checkRestore(s state.Session, rules restoreRules) (rebind string, err error) {
	endpoint := rules.upstream
	switch {
	case s.UpstreamConfig == rules.upstream:
	case slices.Contains(rules.more, s.UpstreamConfig):
		endpoint = s.UpstreamConfig
	case len(rules.more) > 0:
		return "", fmt.Errorf("saved for upstream %q, the relay now has %q", s.UpstreamConfig, append([]string{rules.upstream}, rules.more...))
	default:
		return "", fmt.Errorf("saved for upstream %q, the relay now has %q", s.UpstreamConfig, rules.upstream)
	}
	if s.Client.IsZero() {
		return "", fmt.Errorf("client ID %v: the relay opens no session for a zero ID", s.Client)
	}
	up := s.Upstream
	if !up.IsValid() || up.Port() == 0 || up.Addr().IsUnspecified() || up.Addr().IsMulticast() {
		return "", fmt.Errorf("upstream address %q is not one to connect to", up)
	}
	host, portText, err := net.SplitHostPort(endpoint)
	if err != nil {
		return "", fmt.Errorf("configured upstream %q: %w", endpoint, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return "", fmt.Errorf("configured upstream %q: port %q", endpoint, portText)
	}
	if up.Port() != uint16(port) {
		return "", fmt.Errorf("upstream %v is not on the configured port %d", up, port)
	}
	if literal, err := netip.ParseAddr(host); err == nil && up.Addr().Unmap() != literal.Unmap() {
		return "", fmt.Errorf("upstream %v is not the configured %s", up, endpoint)
	}

	local := s.UpstreamLocal
	lo, hi := rules.ports[0], rules.ports[1]
	switch {
	case !local.IsValid() || local.Port() == 0:
		return "no upstream port was saved", nil
	case rules.bind.IsValid() && !rules.bind.IsUnspecified() && local.Addr().Unmap() != rules.bind.Unmap():
		return fmt.Sprintf("saved on %v, but upstream_bind is now %v", local.Addr(), rules.bind), nil
	case lo != 0 && (local.Port() < lo || local.Port() > hi):
		return fmt.Sprintf("port %d is outside upstream_ports %d-%d", local.Port(), lo, hi), nil
	}
	return "", nil
}

// Snapshot returns the relay's live sessions in the form the state file
// keeps them. A saved roaming state names the listening socket by its place
// in the relay's listen list, which is how the next start numbers its
// sockets; after a reload changed the list, the relay's own numbering
// differs, and the states are translated. A session whose socket a reload
// removed names none (noListener): its replies wait until it is heard again.
// The socket's configured address is saved beside the state (Listen), so
// that a start with another listen list puts the session on the socket of
// that address, or on none, never on another one that took its place.
// Each session is saved with its endpoint (UpstreamConfig), one of the
// configured upstreams.
func (r *Relay) Snapshot(timeout time.Duration) ([]state.Session, error) {
	cfg := r.Config()
	if cfg.Mode != config.ModeWireGuard {
		return nil, nil // forward mode re-binds its one socket from its rule
	}
	l, err := r.Sessions(timeout)
	if err != nil {
		return nil, err
	}
	places, wants := r.listenPlaces()
	out := make([]state.Session, 0, len(l.Sessions))
	for _, s := range l.Sessions {
		if s.Client.IsZero() {
			// A plain client's session is found by the supervisor's
			// index and address tables, which are not saved: its client
			// gets a new session with its next handshake.
			continue
		}
		endpoint := s.Endpoint
		if endpoint == "" {
			endpoint = cfg.Upstream.String()
		}
		roam, listen := renumberListener(s.Roam, places, wants)
		out = append(out, state.Session{
			ID:             s.Session,
			Client:         s.Client,
			ClientAddr:     s.ClientAddr,
			UpstreamLocal:  s.UpstreamLocal,
			Upstream:       s.Upstream,
			UpstreamConfig: endpoint,
			Listen:         listen,
			Created:        s.Stats.Created,
			Roam:           roam,
		})
	}
	return out, nil
}

// noListener is the listener index a saved session gets when its listening
// socket was removed: the next start gives it to no socket unless the
// listen list then holds all config.MaxListen addresses.
const noListener = config.MaxListen - 1

// listenPlaces returns, for each listener index, the socket's place in the
// listen list (-1 for a removed one), or nil when they are the same; and
// each index's address as configured (the zero value for a removed one).
func (r *Relay) listenPlaces() (places []int, wants []netip.AddrPort) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	places = make([]int, len(r.slots))
	wants = make([]netip.AddrPort, len(r.slots))
	same := len(r.slots) == len(r.cfg.Listen)
	for i, sl := range r.slots {
		places[i] = -1
		if sl != nil {
			places[i] = slices.Index(r.cfg.Listen, sl.want)
			wants[i] = sl.want
		}
		same = same && places[i] == i
	}
	if same {
		return nil, wants
	}
	return places, wants
}

// renumberListener rewrites a saved roaming state's listener index by
// places (see listenPlaces; nil places leave it as it is), and returns the
// configured address of its socket by wants. A state it cannot read is
// left as it is, without an address.
func renumberListener(saved []byte, places []int, wants []netip.AddrPort) ([]byte, netip.AddrPort) {
	if len(saved) == 0 {
		return saved, netip.AddrPort{}
	}
	var st roam.State
	if err := json.Unmarshal(saved, &st); err != nil {
		return saved, netip.AddrPort{}
	}
	i := int(st.Listener)
	var want netip.AddrPort
	if i < len(wants) {
		want = wants[i]
	}
	if places == nil {
		return saved, want
	}
	st.Listener = noListener
	if i < len(places) && places[i] >= 0 {
		st.Listener = uint8(places[i])
	}
	b, err := json.Marshal(st)
	if err != nil {
		return saved, want
	}
	return b, want
}

// placeListener points a saved roaming state at the socket of its saved
// listening address in today's listen list, or at none (noListener) if
// that address is not in it any more: the replies then wait until the
// client is heard on a socket that exists. A session saved without an
// address (by a version before it was saved) keeps its index.
func placeListener(saved []byte, addr netip.AddrPort, listen []netip.AddrPort) []byte {
	if !addr.IsValid() || len(saved) == 0 {
		return saved
	}
	var st roam.State
	if err := json.Unmarshal(saved, &st); err != nil {
		return saved
	}
	place := uint8(noListener)
	if i := slices.Index(listen, addr); i >= 0 {
		place = uint8(i)
	}
	if place == st.Listener {
		return saved
	}
	st.Listener = place
	b, err := json.Marshal(st)
	if err != nil {
		return saved
	}
	return b
}

// unmap writes an IPv4-mapped IPv6 address (as state files written before
// udpio unmapped what it reads hold them) as the IPv4 address it is.
func unmap(a netip.AddrPort) netip.AddrPort {
	if !a.IsValid() {
		return a
	}
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}
