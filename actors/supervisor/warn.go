package supervisor

import (
	"net/netip"
	"time"
	"unsafe"

	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Saying why a client gets nothing. Every drop is counted by reason; for
// the reasons an operator can fix, the first drop from a source also logs
// one warning that says what to do. A source is warned about again only
// after warnAgain, or once warnSources newer sources pushed it out of a
// reason's memory, and no reason logs more than warnPerSecond warnings a
// second (the logger's sampling comes on top): a flood from forged
// addresses costs a comparison per datagram, not a log line.

// hints are the warnings, by the drop reason they explain; "" for reasons
// that are not the client's or the operator's to fix (a flood, a full
// queue).
var hints = [stats.NumReasons]string{
	stats.ZeroClientID:       "zero client ID: plain WireGuard? set reserved bytes, or run with --zero-id track",
	stats.BadMAC1:            "handshake initiation with a bad mac1: is --upstream-public-key the upstream's public key (the [Peer] PublicKey in the client's profile)?",
	stats.ClientNotAllowed:   "session refused: client ID not on --allow-client (a plain client has no ID: admit plain clients by --allow-cidr instead)",
	stats.SourceNotAllowed:   "session refused: source denied by --deny-cidr or on no --allow-cidr",
	stats.WARPType:           "message type 0xc1-0xc4 (the official WARP client's own framing, not WireGuard's): --message-types any forwards it, as the seed did",
	stats.UnknownClient:      "datagram for a client ID without a session (udpfwd restarted without --state-file, or the session expired): the client's next handshake opens one",
	stats.ZeroIDUnknownIndex: "plain client's datagram that no tracked session knows (udpfwd restarted, or the session expired): the client's next handshake opens one",
}

// warned reports whether drops for r are explained in the log.
func warned(r stats.Reason) bool { return hints[r] != "" }

const (
	// warnSources is how many sources each reason remembers having
	// warned about: 64 sources of 48 bytes for each of the 7 reasons with
	// a hint, 21 KiB in all.
	warnSources = 64
	// warnAgain is how long a source stays warned about.
	warnAgain = 10 * time.Minute
	// warnPerSecond bounds each reason's warnings.
	warnPerSecond = 5
	// tableFullEvery bounds the index table's "full" warnings.
	tableFullEvery = time.Minute
)

// WarnBytes is the memory a supervisor's warnings hold, whatever arrives:
// each reason with a hint remembers warnSources sources, from the start.
func WarnBytes() int {
	n := 0
	for _, h := range hints {
		if h != "" {
			n++
		}
	}
	return n * int(unsafe.Sizeof(warnSet{}))
}

// warnedSource is a source a reason warned about, and when.
type warnedSource struct {
	addr netip.Addr
	at   time.Time
}

// warnSet is one reason's memory of the sources it warned about.
type warnSet struct {
	sources [warnSources]warnedSource
	next    int
	second  time.Time // the start of the second being counted
	inWin   int       // warnings in it
}

// warner logs the hints. It is the supervisor's own: only its goroutine
// uses it.
type warner struct {
	log      *zap.Logger
	sets     [stats.NumReasons]*warnSet
	fullWarn time.Time
}

func newWarner(log *zap.Logger) warner {
	w := warner{log: log}
	for r, h := range hints {
		if h != "" {
			w.sets[r] = &warnSet{}
		}
	}
	return w
}

// source warns, if it is due, that a datagram from ip was dropped for r.
// clock is read only when r has a hint.
func (w *warner) source(r stats.Reason, ip netip.Addr, clock func() time.Time) {
	ws := w.sets[r]
	if ws == nil || w.log == nil {
		return
	}
	now := clock()
	if now.Sub(ws.second) >= time.Second || now.Before(ws.second) {
		ws.second, ws.inWin = now, 0
	}
	if ws.inWin >= warnPerSecond {
		return
	}
	ip = ip.Unmap()
	for i := range ws.sources {
		if x := &ws.sources[i]; x.addr == ip && now.Sub(x.at) < warnAgain {
			return
		}
	}
	ws.sources[ws.next] = warnedSource{addr: ip, at: now}
	ws.next = (ws.next + 1) % warnSources
	ws.inWin++
	w.log.Warn(hints[r], zap.String("reason", r.String()), zap.Stringer("from", ip))
}

// tableFull warns, at most once a tableFullEvery, that the index table of
// plain clients refused an index.
func (w *warner) tableFull(indexes int, clock func() time.Time) {
	now := clock()
	if w.log == nil || (!w.fullWarn.IsZero() && now.Sub(w.fullWarn) < tableFullEvery) {
		return
	}
	w.fullWarn = now
	w.log.Warn("index table of plain clients full: a plain client that roams now is found only after older indexes age out",
		zap.Int("indexes", indexes), zap.Int("max", MaxTrackedIndexes))
}

// clientFields name a client in a log line: its ID in hex and base64, or
// "plain" for a plain WireGuard client, which has no ID.
func clientFields(id wgproto.ClientID) []zap.Field {
	if id.IsZero() {
		return []zap.Field{zap.String("client", "plain")}
	}
	return []zap.Field{zap.Stringer("client", id), zap.String("client_b64", id.Base64())}
}

// clientField names a client in one field, as clientFields does.
func clientField(id wgproto.ClientID) zap.Field {
	if id.IsZero() {
		return zap.String("client", "plain")
	}
	return zap.Stringer("client", id)
}

// addrField logs an address as people write it (an IPv4 client of a
// dual-stack socket without its ::ffff: prefix).
func addrField(name string, a netip.AddrPort) zap.Field {
	return zap.Stringer(name, netip.AddrPortFrom(a.Addr().Unmap(), a.Port()))
}
