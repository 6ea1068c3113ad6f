package config

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/udpfwd/udpfwd/internal/fileio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Defaults, with the reason for each. Validate fills them in; the relay
// (actors/relay) takes them from here.
const (
	// DefaultLogLevel and DefaultLogFormat match the command-line flags.
	DefaultLogLevel  = "info"
	DefaultLogFormat = "console"
	// DefaultIdleTimeout ends a session silent in either direction this
	// long: WireGuard keeps a live tunnel talking every few minutes.
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultResolveInterval is how often an upstream hostname is looked
	// up again; WARP's anycast addresses change rarely.
	DefaultResolveInterval = 5 * time.Minute
	// DefaultSocketBuffer is SO_RCVBUF and SO_SNDBUF: 4 MiB holds bursts
	// that the kernel's 208 KiB default drops (same as udpio's default).
	DefaultSocketBuffer = 4 << 20
	// MinSocketBuffer and MaxSocketBuffer bound read_buffer and
	// write_buffer. The minimum catches "4" meant as "4MiB"; the maximum
	// keeps the kernel's doubled value within an int32.
	MinSocketBuffer = 4 << 10
	MaxSocketBuffer = 1 << 30
	// MaxListen is the most listen addresses one relay may have, its
	// ranges counted port by port: the relay tags each datagram, and each
	// session's saved roaming state, with its listening socket's index in
	// one byte. The 54 ports WARP answers on take a fifth of it; each
	// address also costs a socket and its reader goroutine (times the
	// workers, where there are several), and a reload that replaces
	// addresses takes new indexes (see actors/relay Reconfigure).
	MaxListen = 256
	// MaxWorkers bounds workers: no machine udpfwd runs on has more
	// cores, and each worker holds a socket per listen address.
	MaxWorkers = 1024
	// MaxUpstreams is the most upstream endpoints one relay may have: a
	// pool to spread sessions over and fail over within, not a list of
	// every WARP address. Each name among them has its own resolver.
	MaxUpstreams = 16
	// DefaultFailoverAfter is how many handshake initiations of a session
	// in a row may go unanswered before it moves to another endpoint:
	// WireGuard retries every 5 s, so a session leaves a dead endpoint
	// about 10 s after its first unanswered initiation, while one lost
	// initiation (a lost datagram) moves nothing.
	DefaultFailoverAfter = 2
	// MaxFailoverAfter bounds failover_after: 100 retries are over 8
	// minutes.
	MaxFailoverAfter = 100
	// maxNameLen bounds a relay name, which becomes a metric label.
	maxNameLen = 64
)

// Mode is how a relay groups datagrams.
type Mode string

// The relay modes.
const (
	// ModeWireGuard relays WARP WireGuard with one session, and one stable
	// upstream source port, per client ID.
	ModeWireGuard Mode = "wireguard"
	// ModeForward forwards plain UDP from one listen address to the
	// upstream through one outbound socket.
	ModeForward Mode = "forward"
)

// File is the whole configuration: process-wide settings and the relays to
// run. It is filled from a config file (Decode, Read), from the command
// line (FromArgs, ReadForward, SetFlag) or in code, and then checked once,
// defaults filled in, by Validate. Parse and Load do both for a file.
type File struct {
	// Log selects the logger, as --log-level and --log-format do.
	Log Log
	// Admin is the admin HTTP listener's "host:port" (/metrics,
	// /healthz, /sessions); empty turns it off.
	Admin string
	// AdminTokenFile, if set, holds the bearer token the admin listener's
	// /sessions requires; the command reads it at start and on each reload.
	AdminTokenFile string
	// AdminAllowHosts are further names (or addresses, or "*" for any) the
	// admin listener answers to in a request's Host header, beyond its own
	// address and the loopback names: the names it is reached by.
	AdminAllowHosts []string
	// StateFile is where sessions are saved so that they survive a
	// restart; empty turns saving off. It is an absolute path.
	StateFile string
	// Cluster, if named, makes this process a node of a cluster (cluster.go).
	Cluster Cluster
	// Relays are the relays to run, at least one.
	Relays []Relay

	src *source // where the values were read from, for messages
}

// Log selects the logger.
type Log struct {
	// Level is debug, info, warn or error.
	Level string
	// Format is console or json.
	Format string
}

// Relay is one relay: its listening sockets, its upstream and its
// policies.
type Relay struct {
	// Name is unique, [a-z0-9_-]+; it labels logs and metrics and keys
	// the relay's sessions in the state file.
	Name string
	// Mode defaults to ModeWireGuard.
	Mode Mode
	// Listen are the addresses to listen on ("[::]:2408" is dual-stack),
	// a port range written in the file or on the command line already
	// expanded port by port, at most MaxListen. A forward relay has
	// exactly one. Port 0 lets the kernel choose (for
	// tests: the chosen port is only logged).
	Listen []netip.AddrPort
	// Upstream is where sessions send to; the host may be a name. With
	// MoreUpstreams it is the first endpoint of a pool.
	Upstream HostPort
	// MoreUpstreams are further upstream endpoints ("upstream" given as a
	// list; wireguard mode only): new sessions go to the endpoint that
	// answers handshakes fastest, and a session whose endpoint stops
	// answering moves to another (see FailoverAfter). Use Endpoints for
	// the whole pool.
	MoreUpstreams []HostPort
	// FailoverAfter is how many of a session's handshake initiations in a
	// row may go unanswered before it moves to another endpoint, and how
	// many in a row across its sessions mark an endpoint down (wireguard
	// mode only).
	FailoverAfter int
	// IdleTimeout ends a session silent in either direction this long
	// (wireguard mode only).
	IdleTimeout time.Duration
	// ResolveInterval is how often an upstream hostname is looked up
	// again (wireguard mode only).
	ResolveInterval time.Duration
	// UpstreamBind is the local address upstream sockets bind to; the
	// zero value lets the kernel choose. In wireguard mode its port is 0
	// (ports come from UpstreamPorts); in forward mode a port names the
	// one outbound socket's port.
	UpstreamBind netip.AddrPort
	// UpstreamPorts, when set, is the range upstream sockets take their
	// ports from (wireguard mode only).
	UpstreamPorts PortRange
	// ReadBuffer and WriteBuffer are SO_RCVBUF and SO_SNDBUF of every
	// socket of the relay, in bytes.
	ReadBuffer, WriteBuffer int
	// NoGSO sends every datagram as its own message, without UDP generic
	// segmentation offload (the file's "gso: false").
	NoGSO bool
	// Workers is how many workers the relay runs (wireguard mode): each
	// listen address is bound by as many sockets, and the kernel sends
	// every datagram to socket (client ID mod Workers), so that each
	// worker, with its own event loops on its own core, handles its own
	// clients. 0 is "auto": one per CPU Go may use (GOMAXPROCS), or one
	// with ReusePort. A forward relay runs one.
	Workers int
	// ReusePort lets other processes of the same user that set it too
	// bind the relay's listening addresses, and the kernel spreads
	// datagrams over all of their sockets by 4-tuple (several relays on
	// one port, a stand-in for ECMP). Without it a listening port another
	// socket holds fails to bind ("port in use"). It cannot be steered by
	// client ID, so it goes with one worker.
	ReusePort bool
	// ZeroID says what becomes of plain WireGuard clients, which send the
	// zero client ID (wireguard mode only; default ZeroIDDrop).
	ZeroID ZeroID
	// StampClientID, if not zero, is written into bytes 1..3 of what
	// tracked plain clients send upstream, and cleared from what goes back
	// to them (needs ZeroIDTrack).
	StampClientID wgproto.ClientID
	// MessageTypes says which datagrams are taken for a session (wireguard
	// mode only; default MessageTypesStrict).
	MessageTypes MessageTypes
	// Security holds the relay's admission policies (wireguard mode only).
	Security Security
}

// Security is who may open a session, and how much a client may send.
// The zero value admits everyone without limits (except MaxSessions,
// whose zero means a limit derived from the open-file limit).
type Security struct {
	// UpstreamPublicKey, when set, lets only handshake initiations whose
	// mac1 is valid for this key open a session.
	UpstreamPublicKey PublicKey
	// AllowClients, when not empty, are the only client IDs that may open
	// a session.
	AllowClients []wgproto.ClientID
	// AllowCIDRs, when not empty, are the only source networks that may
	// open a session; DenyCIDRs may never, and win over AllowCIDRs.
	AllowCIDRs, DenyCIDRs []netip.Prefix
	// MaxSessions caps the relay's live sessions; 0 derives the cap from
	// the open-file limit.
	MaxSessions int
	// MaxSessionsPerIP caps live sessions per source IP; 0 is no cap.
	MaxSessionsPerIP int
	// NewSessionsPerIP is the rate of new sessions per source IP, per
	// second (may be fractional); 0 is no limit.
	NewSessionsPerIP float64
	// NewSessionsPerIPBurst is the token bucket's depth for
	// NewSessionsPerIP; 0 means the rate rounded up, at least 1.
	NewSessionsPerIPBurst int
	// ClientRate limits each client's traffic towards the upstream.
	ClientRate ClientRate
}

// ClientRate is a per-client token-bucket rate limit; zero fields are no
// limit.
type ClientRate struct {
	// DatagramsPerSecond is the rate of datagrams (may be fractional).
	DatagramsPerSecond float64
	// BytesPerSecond is the rate of bytes.
	BytesPerSecond int64
}

// Endpoints returns the relay's upstream endpoints, Upstream first: a pool
// of one for most relays.
func (r *Relay) Endpoints() []HostPort {
	if r.Upstream.IsZero() && len(r.MoreUpstreams) == 0 {
		return nil
	}
	return append([]HostPort{r.Upstream}, r.MoreUpstreams...)
}

// IsZero reports whether the security block sets nothing.
func (s *Security) IsZero() bool {
	return s.UpstreamPublicKey.IsZero() && len(s.AllowClients) == 0 && len(s.AllowCIDRs) == 0 &&
		len(s.DenyCIDRs) == 0 && s.MaxSessions == 0 && s.MaxSessionsPerIP == 0 &&
		s.NewSessionsPerIP == 0 && s.NewSessionsPerIPBurst == 0 && s.ClientRate == ClientRate{}
}

// Equal reports whether r and o configure the same relay, value for
// value: a reload keeps a relay whose configuration is Equal. It compares
// every field (a test sets each field in turn to catch one left out).
func (r *Relay) Equal(o *Relay) bool {
	return r.Name == o.Name && r.Mode == o.Mode && slices.Equal(r.Listen, o.Listen) && r.Upstream == o.Upstream &&
		slices.Equal(r.MoreUpstreams, o.MoreUpstreams) && r.FailoverAfter == o.FailoverAfter &&
		r.IdleTimeout == o.IdleTimeout && r.ResolveInterval == o.ResolveInterval && r.UpstreamBind == o.UpstreamBind &&
		r.UpstreamPorts == o.UpstreamPorts && r.ReadBuffer == o.ReadBuffer && r.WriteBuffer == o.WriteBuffer &&
		r.NoGSO == o.NoGSO && r.Workers == o.Workers && r.ReusePort == o.ReusePort && r.ZeroID == o.ZeroID &&
		r.StampClientID == o.StampClientID && r.MessageTypes == o.MessageTypes && r.Security.Equal(&o.Security)
}

// Equal reports whether s and o set the same policies.
func (s *Security) Equal(o *Security) bool {
	return s.UpstreamPublicKey == o.UpstreamPublicKey && slices.Equal(s.AllowClients, o.AllowClients) &&
		slices.Equal(s.AllowCIDRs, o.AllowCIDRs) && slices.Equal(s.DenyCIDRs, o.DenyCIDRs) &&
		s.MaxSessions == o.MaxSessions && s.MaxSessionsPerIP == o.MaxSessionsPerIP &&
		s.NewSessionsPerIP == o.NewSessionsPerIP && s.NewSessionsPerIPBurst == o.NewSessionsPerIPBurst &&
		s.ClientRate == o.ClientRate
}

// Error is one problem in a config file. Parse, Load and Validate return
// one, or several joined with errors.Join (one per line, in file order).
type Error struct {
	// File is the name given to Parse or Load; empty for a File built in
	// code.
	File string
	// Line is 1-based; 0 when the key was not in the file.
	Line int
	// Index is a forward rule's place on its line, from 1, when the line
	// of a static forward file holds several rules; else 0.
	Index int
	// Path is the key's path, e.g. "relays[1].idle_timeout"; empty when
	// the problem is the whole file.
	Path string
	// Flag is the command-line flag or argument that set the value
	// ("--socket-buffer", "UPSTREAM"), when one did; the message then
	// names it instead of the file and the key.
	Flag string
	// Msg says what is wrong.
	Msg string
	// Err is the underlying error, if any.
	Err error
}

// Error reads "file:line: path: msg", leaving out what is unknown, or
// "flag: msg" for a value from the command line.
func (e *Error) Error() string {
	if e.Flag != "" {
		return e.Flag + ": " + e.Msg
	}
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
			if e.Index > 0 {
				fmt.Fprintf(&b, ":%d", e.Index)
			}
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// maxErrors is how many problems one error reports; more are counted.
const maxErrors = 20

// source remembers where each value was set: a line of the config file, or
// a command-line flag.
type source struct {
	name  string            // the file's name as given, for messages
	lines map[string]int    // key path -> line
	flags map[string]string // key path -> the flag or argument that set it
	// forward is set for a static forward file: its relays are its rules,
	// and messages name a rule's fields rather than keys.
	forward bool
	// index is, for a forward file, each rule's place on its line
	// ("relays[i]" -> 1, 2, ...) where a line holds several rules.
	index map[string]int
}

// setBy records that origin (a flag) set the key at path, replacing what
// the file said there: later messages about the key, or a part of it, name
// the flag.
func (s *source) setBy(path, origin string) {
	for p := range s.lines {
		if p == path || strings.HasPrefix(p, path+".") || strings.HasPrefix(p, path+"[") {
			delete(s.lines, p)
		}
	}
	if s.flags == nil {
		s.flags = make(map[string]string)
	}
	s.flags[path] = origin
}

// locate fills in where e's key was set: the flag that set it or one of its
// ancestors, else the line of the nearest ancestor the file wrote (none for
// a list element the file did not have, such as a relay added in code).
func (s *source) locate(e *Error) {
	if s == nil {
		return
	}
	e.File = s.name
	for p := e.Path; ; p = parentPath(p) {
		if f, ok := s.flags[p]; ok {
			e.Flag = f
			return
		}
		if p == "" {
			break
		}
	}
	for p := e.Path; ; p = parentPath(p) {
		if l, ok := s.lines[p]; ok {
			e.Line = l
			break
		}
		if p == "" || strings.HasSuffix(p, "]") {
			break
		}
	}
	if s.forward {
		relay, _, _ := strings.Cut(e.Path, "].")
		if !strings.HasSuffix(relay, "]") {
			relay += "]"
		}
		e.Index = s.index[relay]
		e.Path = ruleField(e.Path)
	}
}

// ruleField names the field of a forward rule that a relay's key path
// comes from: its relays are "relays[i]" with one listen address.
func ruleField(path string) string {
	_, key, _ := strings.Cut(path, "].")
	switch {
	case !strings.HasPrefix(path, "relays["):
		return path
	case key == "":
		return ""
	case strings.HasPrefix(key, "listen"):
		return "in"
	case key == "upstream_bind":
		return "out"
	case key == "upstream":
		return "dest"
	}
	return key
}

// parentPath drops the last ".key" or "[i]" of a key path.
func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

// problems collects Errors, and warnings: values that work but probably
// do not do what was meant.
type problems struct {
	src   *source
	errs  []*Error
	warns []*Error
}

func (p *problems) add(path string, err error, format string, args ...any) {
	e := &Error{Path: path, Msg: fmt.Sprintf(format, args...), Err: err}
	p.src.locate(e)
	p.errs = append(p.errs, e)
}

func (p *problems) warn(path string, format string, args ...any) {
	e := &Error{Path: path, Msg: fmt.Sprintf(format, args...)}
	p.src.locate(e)
	p.warns = append(p.warns, e)
}

// sorted orders es by line, flags first, and drops repeats (a flag sets
// every relay, so each relay would report its value again).
func sorted(es []*Error) []*Error {
	slices.SortStableFunc(es, func(a, b *Error) int { return cmp.Compare(a.Line, b.Line) })
	seen := make(map[string]bool)
	out := es[:0]
	for _, e := range es {
		if s := e.Error(); !seen[s] {
			seen[s] = true
			out = append(out, e)
		}
	}
	return out
}

func (p *problems) err() error {
	if len(p.errs) == 0 {
		return nil
	}
	es := sorted(p.errs)
	errs := make([]error, 0, maxErrors+1)
	for i, e := range es {
		if i == maxErrors {
			errs = append(errs, fmt.Errorf("and %d more problems", len(es)-maxErrors))
			break
		}
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

// Read reads and decodes the config file at path, without validating it
// as a whole (see Decode); errors name the path as given.
func Read(path string) (*File, error) {
	data, err := fileio.ReadFile(path, fileio.MaxSize)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Decode(data, path)
}

// Decode reads a config file, refusing bad YAML, unknown keys and values
// that do not parse, without validating the whole (missing keys, conflicts,
// defaults): flags may still change it; Validate comes last. name is the
// file name used in errors, which read "name:line: key.path: problem".
func Decode(data []byte, name string) (*File, error) { return decode(data, name) }

// Load is Read, then Validate.
func Load(path string) (*File, error) {
	f, err := Read(path)
	if err != nil {
		return nil, err
	}
	if _, err := f.Validate(); err != nil {
		return nil, err
	}
	return f, nil
}

// Parse is Decode, then Validate.
func Parse(data []byte, name string) (*File, error) {
	f, err := Decode(data, name)
	if err != nil {
		return nil, err
	}
	if _, err := f.Validate(); err != nil {
		return nil, err
	}
	return f, nil
}

// Validate fills in defaults for unset values and checks the whole
// configuration: each value, the rules of each mode, and conflicts between
// relays (names, listening ports). It does not touch the network. Calling
// it again is harmless. Problems are returned as one error (one *Error per
// line, in file order); warnings, about values that work but probably do
// not do what was meant, come back apart for the caller to show. Each
// names where its value was set: the file's line and key, or the flag.
func (f *File) Validate() (warnings []*Error, err error) {
	p := &problems{src: f.src}
	if f.Log.Level == "" {
		f.Log.Level = DefaultLogLevel
	}
	if f.Log.Format == "" {
		f.Log.Format = DefaultLogFormat
	}
	for _, v := range []struct {
		path, text string
		parse      func(string) (string, error)
	}{
		{"log.level", f.Log.Level, parseLogLevel},
		{"log.format", f.Log.Format, parseLogFormat},
		{"admin", f.Admin, parseAdmin},
		{"admin_token_file", f.AdminTokenFile, parseTokenFile},
		{"state_file", f.StateFile, parseStateFile},
	} {
		if _, err := v.parse(v.text); err != nil {
			p.add(v.path, err, "%v", err)
		}
	}
	for i, h := range f.AdminAllowHosts {
		if _, err := parseAllowHost(h); err != nil {
			p.add(fmt.Sprintf("admin_allow_hosts[%d]", i), err, "%v", err)
		}
	}
	if f.Admin == "" && f.AdminTokenFile != "" {
		p.warn("admin_token_file", "set, but the admin listener is off (no admin address)")
	}
	if f.Admin == "" && len(f.AdminAllowHosts) > 0 {
		p.warn("admin_allow_hosts", "set, but the admin listener is off (no admin address)")
	}
	f.Cluster.validate(p)
	if len(f.Relays) == 0 {
		p.add("relays", nil, "no relays: at least one is needed")
	}
	names := make(map[string]int)
	for i := range f.Relays {
		r := &f.Relays[i]
		at := fmt.Sprintf("relays[%d]", i)
		r.validate(p, at)
		if prev, dup := names[r.Name]; dup && r.Name != "" {
			p.add(at+".name", nil, "%q is also the name of relays[%d]", r.Name, prev)
		} else {
			names[r.Name] = i
		}
	}
	f.checkPorts(p)
	return sorted(p.warns), p.err()
}

// validate checks one relay and fills in its defaults.
func (r *Relay) validate(p *problems, at string) {
	switch {
	case r.Name == "":
		p.add(at, nil, "name is missing (it labels logs and metrics and keys the state file)")
	case len(r.Name) > maxNameLen || strings.Trim(r.Name, "abcdefghijklmnopqrstuvwxyz0123456789_-") != "":
		p.add(at+".name", nil, "%q: use 1..%d of a-z, 0-9, '_' and '-'", r.Name, maxNameLen)
	}
	if r.Mode == "" {
		r.Mode = ModeWireGuard
	}
	if r.Mode != ModeWireGuard && r.Mode != ModeForward {
		p.add(at+".mode", nil, "%q: want wireguard or forward", r.Mode)
	}
	switch {
	case len(r.Listen) == 0:
		p.add(at, nil, "listen is missing (one or more ip:port)")
	case len(r.Listen) > MaxListen:
		p.add(at+".listen", nil, "%d addresses: at most %d", len(r.Listen), MaxListen)
	case r.Mode == ModeForward && len(r.Listen) != 1:
		p.add(at+".listen", nil, "a forward relay listens on exactly one address, got %d (write one relay per address)", len(r.Listen))
	}
	for j, l := range r.Listen {
		if !l.IsValid() || !l.Addr().IsValid() {
			p.add(fmt.Sprintf("%s.listen[%d]", at, j), nil, "not an ip:port")
		}
	}
	r.validateUpstreams(p, at)
	if r.ReadBuffer == 0 {
		r.ReadBuffer = DefaultSocketBuffer
	}
	if r.WriteBuffer == 0 {
		r.WriteBuffer = DefaultSocketBuffer
	}
	for _, b := range []struct {
		key string
		v   int
	}{{"read_buffer", r.ReadBuffer}, {"write_buffer", r.WriteBuffer}} {
		if err := checkBuffer(strconv.Itoa(b.v), int64(b.v)); err != nil {
			p.add(at+"."+b.key, err, "%v", err)
		}
	}
	if r.Mode == ModeForward {
		r.validateForward(p, at)
		return
	}
	if r.ReusePort && r.Workers > 1 {
		p.add(at+".workers", nil, "%d with reuse_port: a port shared with other processes cannot be steered by client ID; use workers: 1 (auto is 1 with reuse_port)", r.Workers)
	}
	if r.IdleTimeout == 0 {
		r.IdleTimeout = DefaultIdleTimeout
	}
	if r.ResolveInterval == 0 {
		r.ResolveInterval = DefaultResolveInterval
	}
	if r.FailoverAfter == 0 {
		r.FailoverAfter = DefaultFailoverAfter
	}
	if _, err := parseFailoverAfter(strconv.Itoa(r.FailoverAfter)); err != nil {
		p.add(at+".failover_after", err, "%v", err)
	}
	if r.IdleTimeout < 0 {
		p.add(at+".idle_timeout", nil, "%v: must be positive", r.IdleTimeout)
	} else if r.IdleTimeout < WARPKeepalive {
		p.warn(at+".idle_timeout", "%v is shorter than the %v between a WARP client's keepalives: an idle client's session ends between two, and its next datagram opens a new one on a new upstream port (maybe to another WARP server)", r.IdleTimeout, WARPKeepalive)
	}
	if r.ResolveInterval < 0 {
		p.add(at+".resolve_interval", nil, "%v: must be positive", r.ResolveInterval)
	}
	if r.UpstreamBind.IsValid() && r.UpstreamBind.Port() != 0 {
		p.add(at+".upstream_bind", nil, "%s: give an address without a port in wireguard mode, where every session has its own port; use upstream_ports for a range", r.UpstreamBind)
	}
	if !r.UpstreamPorts.IsZero() && (r.UpstreamPorts.First == 0 || r.UpstreamPorts.First > r.UpstreamPorts.Last) {
		p.add(at+".upstream_ports", nil, "%d-%d: want first..last within 1..65535", r.UpstreamPorts.First, r.UpstreamPorts.Last)
	}
	r.Security.validate(p, at+".security", r.UpstreamPorts)
	r.validateClients(p, at)
}

// validateUpstreams checks the upstream endpoints: each a name or an
// address with a port, none twice, at most MaxUpstreams, of upstream_bind's
// IP version. The one endpoint of most relays is "upstream" in messages,
// those of a pool "upstream[i]".
func (r *Relay) validateUpstreams(p *problems, at string) {
	eps := r.Endpoints()
	if r.Upstream.IsZero() {
		p.add(at, nil, "upstream is missing (host:port)")
		return
	}
	if len(eps) > MaxUpstreams {
		p.add(at+".upstream", nil, "%d endpoints: at most %d", len(eps), MaxUpstreams)
	}
	for i, h := range eps {
		path := at + ".upstream"
		if len(eps) > 1 {
			path = fmt.Sprintf("%s.upstream[%d]", at, i)
		}
		switch {
		case h.Port == 0:
			p.add(path, nil, "%s: port 0 is not 1..65535", h)
		case h.Addr.IsValid() == (h.Name != ""):
			p.add(path, nil, "%+v: give a name or an address", h)
		case h.Name != "" && !isDNSName(h.Name):
			p.add(path, nil, "%q is neither an IP address nor a host name", h.Name)
		}
		if j := slices.Index(eps, h); j < i {
			p.add(path, nil, "%s is also upstream[%d]", h, j)
		}
		if a := h.Addr; r.UpstreamBind.IsValid() && a.IsValid() && r.UpstreamBind.Addr().Unmap().Is4() != a.Unmap().Is4() {
			p.add(at+".upstream_bind", nil, "%s and the upstream %s are not the same IP version", r.UpstreamBind.Addr(), a)
		}
	}
}

// validateForward applies forward mode's rules: it has one upstream socket
// and no sessions, so the session and policy keys do not apply.
func (r *Relay) validateForward(p *problems, at string) {
	for _, k := range []struct {
		key, why string
		set      bool
	}{
		{"idle_timeout", noSessions, r.IdleTimeout != 0},
		{"resolve_interval", "a forward relay resolves its upstream once, at start", r.ResolveInterval != 0},
		{"upstream_ports", "a forward relay has one outbound socket: give its port in upstream_bind", !r.UpstreamPorts.IsZero()},
		{"workers", oneWorker, r.Workers > 1},
		{"failover_after", "a forward relay has one upstream", r.FailoverAfter != 0},
		{"zero_id", notWireGuard, r.ZeroID != ""},
		{"stamp_client_id", notWireGuard, !r.StampClientID.IsZero()},
		{"message_types", notWireGuard, r.MessageTypes != ""},
		{"security", noPolicies, !r.Security.IsZero()},
	} {
		if k.set {
			p.add(at+"."+k.key, nil, "not used in forward mode: %s", k.why)
		}
	}
	if len(r.MoreUpstreams) > 0 {
		p.add(at+".upstream", nil, "a forward relay has one upstream, got %d (write one relay per upstream)", len(r.MoreUpstreams)+1)
	}
}

func (s *Security) validate(p *problems, at string, ports PortRange) {
	seen := make(map[wgproto.ClientID]int)
	for i, id := range s.AllowClients {
		path := fmt.Sprintf("%s.allow_clients[%d]", at, i)
		if id.IsZero() {
			p.add(path, nil, "the zero client ID: the relay drops it")
		}
		if prev, dup := seen[id]; dup {
			p.add(path, nil, "%s is also allow_clients[%d]", id, prev)
		}
		seen[id] = i
	}
	for _, l := range []struct {
		key  string
		list []netip.Prefix
	}{{"allow_cidrs", s.AllowCIDRs}, {"deny_cidrs", s.DenyCIDRs}} {
		for i, pr := range l.list {
			path := fmt.Sprintf("%s.%s[%d]", at, l.key, i)
			if !pr.IsValid() {
				p.add(path, nil, "not a CIDR")
			} else if pr != pr.Masked() {
				p.add(path, nil, "%s has host bits set; write %s", pr, pr.Masked())
			}
		}
	}
	for _, n := range []struct {
		key string
		v   float64
	}{
		{"max_sessions", float64(s.MaxSessions)},
		{"max_sessions_per_ip", float64(s.MaxSessionsPerIP)},
		{"new_sessions_per_ip", s.NewSessionsPerIP},
		{"new_sessions_per_ip_burst", float64(s.NewSessionsPerIPBurst)},
		{"client_rate.datagrams_per_second", s.ClientRate.DatagramsPerSecond},
		{"client_rate.bytes_per_second", float64(s.ClientRate.BytesPerSecond)},
	} {
		if n.v < 0 || n.v != n.v {
			p.add(at+"."+n.key, nil, "%v: must be 0 or more", n.v)
		} else if math.IsInf(n.v, 1) {
			p.add(at+"."+n.key, nil, "%v: must be finite (0 is no limit)", n.v)
		}
	}
	if s.NewSessionsPerIPBurst != 0 && s.NewSessionsPerIP == 0 {
		p.add(at+".new_sessions_per_ip_burst", nil, "set without new_sessions_per_ip (the rate it is the burst of)")
	}
	if s.MaxSessions > 0 && ports.Size() > 0 && s.MaxSessions > ports.Size() {
		p.add(at+".max_sessions", nil, "%d sessions need more ports than upstream_ports %s has (%d)", s.MaxSessions, ports, ports.Size())
	}
}

// boundPort is a socket address a relay binds at start, for conflicts.
type boundPort struct {
	addr netip.AddrPort
	path string
}

// where names the key at path inside a message: its path, or for a
// forward file's rule, the rule's line.
func (p *problems) where(path string) string {
	if p.src == nil || !p.src.forward {
		return path
	}
	e := &Error{Path: path}
	p.src.locate(e)
	return fmt.Sprintf("%s of line %s", e.Path, ForwardRule{Line: e.Line, Index: e.Index}.place())
}

// checkPorts reports listening addresses that two sockets would both bind,
// and upstream port ranges that contain a listening port.
func (f *File) checkPorts(p *problems) {
	var bound []boundPort
	for i := range f.Relays {
		r := &f.Relays[i]
		for j, l := range r.Listen {
			if l.Port() == 0 {
				continue
			}
			path := fmt.Sprintf("relays[%d].listen[%d]", i, j)
			for _, b := range bound {
				if b.addr.Port() == l.Port() && overlap(b.addr.Addr(), l.Addr()) {
					p.add(path, nil, "%s overlaps %s (%s)", l, b.addr, p.where(b.path))
				}
			}
			bound = append(bound, boundPort{l, path})
		}
		if r.Mode == ModeForward && r.UpstreamBind.Port() != 0 {
			path := fmt.Sprintf("relays[%d].upstream_bind", i)
			for _, b := range bound {
				if b.addr.Port() == r.UpstreamBind.Port() && overlap(b.addr.Addr(), r.UpstreamBind.Addr()) {
					p.add(path, nil, "%s overlaps %s (%s)", r.UpstreamBind, b.addr, p.where(b.path))
				}
			}
			bound = append(bound, boundPort{r.UpstreamBind, path})
		}
	}
	for i := range f.Relays {
		r := &f.Relays[i]
		if r.Mode != ModeWireGuard || r.UpstreamPorts.IsZero() {
			continue
		}
		bind := r.UpstreamBind.Addr()
		if !bind.IsValid() {
			bind = netip.IPv6Unspecified()
		}
		for _, b := range bound {
			if r.UpstreamPorts.Contains(b.addr.Port()) && overlap(b.addr.Addr(), bind) {
				p.add(fmt.Sprintf("relays[%d].upstream_ports", i), nil, "%s contains the port of %s (%s)", r.UpstreamPorts, b.addr, p.where(b.path))
			}
		}
	}
}

// overlap reports whether sockets bound to a and b on one port would
// conflict: the same address, or a wildcard covering the other ("[::]"
// is dual-stack and covers IPv4 too).
func overlap(a, b netip.Addr) bool {
	a, b = a.Unmap(), b.Unmap()
	switch {
	case a == b:
		return true
	case a.IsUnspecified() && (a.Is6() || b.Is4()):
		return true
	case b.IsUnspecified() && (b.Is6() || a.Is4()):
		return true
	}
	return false
}
