package config

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// The settings: every key of the file that holds one value, with the
// function that parses its text and stores it. The YAML decoder calls them
// for the file's keys and SetFlag for the command-line flags, so that a
// key and its flag cannot disagree.

// fileKeys are the process-wide keys, by path.
var fileKeys = map[string]func(f *File, s string) error{
	"log.level":  func(f *File, s string) (err error) { f.Log.Level, err = parseLogLevel(s); return },
	"log.format": func(f *File, s string) (err error) { f.Log.Format, err = parseLogFormat(s); return },
	"admin":      func(f *File, s string) (err error) { f.Admin, err = parseAdmin(s); return },
	"state_file": func(f *File, s string) (err error) { f.StateFile, err = parseStateFile(s); return },
	"admin_token_file": func(f *File, s string) (err error) {
		f.AdminTokenFile, err = parseTokenFile(s)
		return
	},
}

// fileLists are the process-wide list keys, by path: each call parses one
// element and appends it.
var fileLists = map[string]func(f *File, s string) error{
	"admin_allow_hosts": func(f *File, s string) error {
		h, err := parseAllowHost(s)
		if err == nil {
			f.AdminAllowHosts = append(f.AdminAllowHosts, h)
		}
		return err
	},
}

// relayKeys are a relay's single-value keys, by path below the relay.
var relayKeys = map[string]func(r *Relay, s string) error{
	"name":             func(r *Relay, s string) error { r.Name = s; return nil },
	"mode":             func(r *Relay, s string) error { r.Mode = Mode(s); return nil },
	"idle_timeout":     func(r *Relay, s string) (err error) { r.IdleTimeout, err = parseDuration(s); return },
	"resolve_interval": func(r *Relay, s string) (err error) { r.ResolveInterval, err = parseDuration(s); return },
	"upstream_bind":    func(r *Relay, s string) (err error) { r.UpstreamBind, err = parseBind(s); return },
	"upstream_ports":   func(r *Relay, s string) (err error) { r.UpstreamPorts, err = parsePorts(s); return },
	"failover_after":   func(r *Relay, s string) (err error) { r.FailoverAfter, err = parseFailoverAfter(s); return },
	"read_buffer":      func(r *Relay, s string) (err error) { r.ReadBuffer, err = parseBuffer(s); return },
	"write_buffer":     func(r *Relay, s string) (err error) { r.WriteBuffer, err = parseBuffer(s); return },
	"gso": func(r *Relay, s string) error {
		on, err := parseBool(s)
		r.NoGSO = !on
		return err
	},
	"workers":         func(r *Relay, s string) (err error) { r.Workers, err = parseWorkers(s); return },
	"reuse_port":      func(r *Relay, s string) (err error) { r.ReusePort, err = parseBool(s); return },
	"zero_id":         func(r *Relay, s string) (err error) { r.ZeroID, err = parseZeroID(s); return },
	"stamp_client_id": func(r *Relay, s string) (err error) { r.StampClientID, err = parseStamp(s); return },
	"message_types":   func(r *Relay, s string) (err error) { r.MessageTypes, err = parseMessageTypes(s); return },
	"security.upstream_public_key": func(r *Relay, s string) (err error) {
		r.Security.UpstreamPublicKey, err = parseKey(s)
		return
	},
	"security.max_sessions": func(r *Relay, s string) (err error) { r.Security.MaxSessions, err = parseCount(s); return },
	"security.max_sessions_per_ip": func(r *Relay, s string) (err error) {
		r.Security.MaxSessionsPerIP, err = parseCount(s)
		return
	},
	"security.new_sessions_per_ip": func(r *Relay, s string) (err error) {
		r.Security.NewSessionsPerIP, err = parseRate(s)
		return
	},
	"security.new_sessions_per_ip_burst": func(r *Relay, s string) (err error) {
		r.Security.NewSessionsPerIPBurst, err = parseCount(s)
		return
	},
	"security.client_rate.datagrams_per_second": func(r *Relay, s string) (err error) {
		r.Security.ClientRate.DatagramsPerSecond, err = parseRate(s)
		return
	},
	"security.client_rate.bytes_per_second": func(r *Relay, s string) (err error) {
		r.Security.ClientRate.BytesPerSecond, err = parseByteRate(s)
		return
	},
}

// relayLists are a relay's list keys, by path below the relay: each call
// parses one element and appends it.
var relayLists = map[string]func(r *Relay, s string) error{
	"listen": func(r *Relay, s string) error {
		aps, err := parseListenSet(s)
		if err == nil {
			r.Listen = append(r.Listen, aps...)
		}
		return err
	},
	// upstream is a list of endpoints (one is the common case, written as
	// a single value): the first is Upstream, the others MoreUpstreams.
	"upstream": func(r *Relay, s string) error {
		hs, err := parseUpstreams(s)
		for _, h := range hs {
			if r.Upstream.IsZero() {
				r.Upstream = h
			} else {
				r.MoreUpstreams = append(r.MoreUpstreams, h)
			}
		}
		return err
	},
	"security.allow_clients": func(r *Relay, s string) error {
		id, err := parseClientID(s)
		if err == nil {
			r.Security.AllowClients = append(r.Security.AllowClients, id)
		}
		return err
	},
	"security.allow_cidrs": func(r *Relay, s string) error {
		p, err := parseCIDR(s)
		if err == nil {
			r.Security.AllowCIDRs = append(r.Security.AllowCIDRs, p)
		}
		return err
	},
	"security.deny_cidrs": func(r *Relay, s string) error {
		p, err := parseCIDR(s)
		if err == nil {
			r.Security.DenyCIDRs = append(r.Security.DenyCIDRs, p)
		}
		return err
	},
}

// Flag is a command-line flag of udpfwd that sets keys of the config. The
// command registers each and hands the values given to SetFlag, which
// parses them with the keys' own parse functions.
type Flag struct {
	// Name is the long name, without dashes ("socket-buffer").
	Name string
	// Usage is the help text; a `word` in back quotes names the value.
	Usage string
	// Default is the default the help shows, or "" for none worth
	// showing (off, or explained in Usage).
	Default string
	// Switch is true for a flag that takes no value (--no-gso).
	Switch bool

	keys          []string // the keys it sets: a file path, or a path below each relay
	wireguardOnly bool     // a relay key of wireguard mode: forward relays keep theirs
	// notForward, if set, says why the flag does not apply to static
	// forward mode: with -f, which has nothing else, it is refused.
	notForward  string
	setFile     func(f *File, s string) error
	setFileList func(f *File, values []string) error
	setRelay    func(r *Relay, values []string) error
}

// Why the wireguard-mode flags do not apply to forward relays, as
// validateForward says it of their keys.
const (
	noSessions   = "a forward relay has no sessions to expire"
	noPolicies   = "the policies admit WireGuard sessions, which a forward relay does not have"
	oneWorker    = "a forward relay has one outbound socket: it runs one worker"
	notWireGuard = "a forward relay forwards any datagram and reads no WireGuard header"
	noCluster    = "a forward relay has no sessions for a cluster to share"
)

// one returns a setter of relay key for a flag that is given once: the
// last value counts, as a flag given twice usually does.
func one(key string) func(r *Relay, values []string) error {
	return func(r *Relay, values []string) error { return relayKeys[key](r, values[len(values)-1]) }
}

// list returns a setter of list key that replaces the list with the
// values; split also reads each value as a comma-separated list.
func list(key string, split bool) func(r *Relay, values []string) error {
	return func(r *Relay, values []string) error {
		resetList(r, key)
		for _, v := range values {
			parts := []string{v}
			if split {
				parts = strings.Split(v, ",")
			}
			for _, p := range parts {
				if p = strings.TrimSpace(p); p != "" || !split {
					if err := relayLists[key](r, p); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
}

// fileList returns a setter of the process-wide list key that replaces the
// list with the values, each also read as a comma-separated list.
func fileList(key string) func(f *File, values []string) error {
	return func(f *File, values []string) error {
		switch key {
		case "admin_allow_hosts":
			f.AdminAllowHosts = nil
		case "cluster.peers":
			f.Cluster.Peers = nil
		case "cluster.etcd":
			f.Cluster.Etcd = nil
		}
		for _, v := range values {
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p != "" {
					if err := fileLists[key](f, p); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
}

// resetList empties the list key of r, for a flag that replaces it.
func resetList(r *Relay, key string) {
	switch key {
	case "security.allow_clients":
		r.Security.AllowClients = nil
	case "security.allow_cidrs":
		r.Security.AllowCIDRs = nil
	case "security.deny_cidrs":
		r.Security.DenyCIDRs = nil
	}
}

// flags are udpfwd's flags that set keys, in the order of its help.
var flags = []Flag{
	{Name: "idle-timeout", Usage: "end a session silent in either direction for `D`, e.g. 90s or 10m",
		Default: FormatDuration(DefaultIdleTimeout), keys: []string{"idle_timeout"}, wireguardOnly: true, notForward: noSessions, setRelay: one("idle_timeout")},
	{Name: "zero-id", Usage: "plain WireGuard clients (client ID zero): `MODE` drop, or track to serve them by their WireGuard indexes and address",
		Default: string(ZeroIDDrop), keys: []string{"zero_id"}, wireguardOnly: true, notForward: notWireGuard, setRelay: one("zero_id")},
	{Name: "stamp-client-id", Usage: "write client `ID` into what tracked plain clients send upstream (needs --zero-id track); qBoV, a81a15 or 168,26,21",
		keys: []string{"stamp_client_id"}, wireguardOnly: true, notForward: notWireGuard, setRelay: one("stamp_client_id")},
	{Name: "message-types", Usage: "`TYPES` strict (well-formed WireGuard only) or any (the seed's rule: any datagram of 32 bytes or more with a client ID)",
		Default: string(MessageTypesStrict), keys: []string{"message_types"}, wireguardOnly: true, notForward: notWireGuard, setRelay: one("message_types")},
	{Name: "log-level", Usage: "log from `LEVEL` up: debug, info, warn or error", Default: DefaultLogLevel,
		keys: []string{"log.level"}, setFile: fileKeys["log.level"]},
	{Name: "log-format", Usage: "log lines as `FORMAT`: console or json", Default: DefaultLogFormat,
		keys: []string{"log.format"}, setFile: fileKeys["log.format"]},
	{Name: "socket-buffer", Usage: "SO_RCVBUF and SO_SNDBUF of every socket: `SIZE` of 4KiB..1GiB, in bytes or with KiB, MiB or GiB",
		Default: FormatByteSize(DefaultSocketBuffer), keys: []string{"read_buffer", "write_buffer"},
		setRelay: func(r *Relay, values []string) error {
			b, err := parseBuffer(values[len(values)-1])
			r.ReadBuffer, r.WriteBuffer = b, b
			return err
		}},
	{Name: "no-gso", Usage: "send every datagram as its own message, without UDP GSO (for a path that mishandles it)",
		Switch: true, keys: []string{"gso"}, setRelay: func(r *Relay, values []string) error {
			off, err := parseBool(values[len(values)-1])
			r.NoGSO = off
			return err
		}},
	{Name: "workers", Usage: "run `N` workers, auto for one per CPU: each listen address gets N sockets, and the kernel steers each client ID to one of them",
		Default: "auto", keys: []string{"workers"}, wireguardOnly: true, notForward: oneWorker, setRelay: one("workers")},
	{Name: "reuse-port", Usage: "let other processes that also set it share the listening ports (the kernel spreads datagrams over them by address); one worker",
		Switch: true, keys: []string{"reuse_port"}, setRelay: one("reuse_port")},
	{Name: "failover-after", Usage: "with several upstreams, move a session to another endpoint after `N` of its handshake initiations in a row went unanswered",
		Default: fmt.Sprint(DefaultFailoverAfter), keys: []string{"failover_after"}, wireguardOnly: true,
		notForward: "a forward relay has one upstream", setRelay: one("failover_after")},
	{Name: "upstream-bind", Usage: "bind upstream sockets to `IP` (wireguard mode), or to ip:port (forward mode: the outbound socket)",
		keys: []string{"upstream_bind"}, setRelay: one("upstream_bind")},
	{Name: "state-file", Usage: "keep sessions in `FILE` (an absolute path), so that a restart keeps their upstream ports",
		keys: []string{"state_file"}, notForward: "a forward relay has no sessions to keep", setFile: fileKeys["state_file"]},
	{Name: "admin", Usage: "serve /metrics, /healthz and /sessions on `HOST:PORT`",
		keys: []string{"admin"}, setFile: fileKeys["admin"]},
	{Name: "admin-token-file", Usage: "require the token in `FILE` (Authorization: Bearer) for the admin listener's /sessions",
		keys: []string{"admin_token_file"}, setFile: fileKeys["admin_token_file"]},
	{Name: "admin-allow-host", Usage: "let the admin listener answer requests for `HOST` too (a name it is reached by); repeatable or comma-separated; * for any",
		keys: []string{"admin_allow_hosts"}, setFileList: fileList("admin_allow_hosts")},
	{Name: "cluster", Usage: "run as a node of cluster `NAME`: sessions stay on the node that admitted their client, and datagrams that reach another node are forwarded to it",
		keys: []string{"cluster.name"}, notForward: noCluster, setFile: clusterKey("cluster.name")},
	{Name: "cluster-bind", Usage: "this node's cluster address `IP:PORT`, reachable by the other nodes (static peers poll its health at PORT+1)",
		keys: []string{"cluster.bind"}, notForward: noCluster, setFile: clusterKey("cluster.bind")},
	{Name: "cluster-peers", Usage: "static membership: every node's cluster address `IP:PORT,...` (this node's may be among them)",
		keys: []string{"cluster.peers"}, notForward: noCluster, setFileList: fileList("cluster.peers")},
	{Name: "cluster-etcd", Usage: "membership through etcd at `URL,...`",
		keys: []string{"cluster.etcd"}, notForward: noCluster, setFileList: fileList("cluster.etcd")},
	{Name: "cluster-reply", Usage: "`MODE` owner (the session's node sends replies from the shared address) or ingress (the node that got the client's latest datagram does)",
		Default: string(ClusterReplyOwner), keys: []string{"cluster.reply"}, notForward: noCluster, setFile: clusterKey("cluster.reply")},
	{Name: "cluster-tls-cert", Usage: "this node's certificate `FILE` (PEM, an IP SAN for its cluster address) for mutual TLS between nodes",
		keys: []string{"cluster.tls_cert"}, notForward: noCluster, setFile: clusterKey("cluster.tls_cert")},
	{Name: "cluster-tls-key", Usage: "the key `FILE` of --cluster-tls-cert",
		keys: []string{"cluster.tls_key"}, notForward: noCluster, setFile: clusterKey("cluster.tls_key")},
	{Name: "cluster-tls-ca", Usage: "the CA `FILE` that signed every node's certificate",
		keys: []string{"cluster.tls_ca"}, notForward: noCluster, setFile: clusterKey("cluster.tls_ca")},
	{Name: "cluster-insecure", Usage: "allow a non-loopback cluster address without TLS (client datagrams cross the network in clear)",
		Switch: true, keys: []string{"cluster.insecure"}, notForward: noCluster, setFile: clusterKey("cluster.insecure")},
	{Name: "upstream-public-key", Usage: "open sessions only for handshakes whose mac1 is valid for this `BASE64` key (WARP's: bmXOC+F1FxEMF9dyiK2H5/1SUtzH0JuVo51h2wPfgyo=)",
		keys: []string{"security.upstream_public_key"}, wireguardOnly: true, notForward: noPolicies, setRelay: one("security.upstream_public_key")},
	{Name: "allow-client", Usage: "only client `ID` may open sessions; repeatable; qBoV, a81a15 or 168,26,21",
		keys: []string{"security.allow_clients"}, wireguardOnly: true, notForward: noPolicies, setRelay: list("security.allow_clients", false)},
	{Name: "allow-cidr", Usage: "only sources in `CIDR` may open sessions; repeatable or comma-separated",
		keys: []string{"security.allow_cidrs"}, wireguardOnly: true, notForward: noPolicies, setRelay: list("security.allow_cidrs", true)},
	{Name: "deny-cidr", Usage: "sources in `CIDR` may not open sessions (wins over --allow-cidr); repeatable or comma-separated",
		keys: []string{"security.deny_cidrs"}, wireguardOnly: true, notForward: noPolicies, setRelay: list("security.deny_cidrs", true)},
	{Name: "max-sessions", Usage: "at most `N` sessions; 0 derives the cap from the open-file limit",
		keys: []string{"security.max_sessions"}, wireguardOnly: true, notForward: noPolicies, setRelay: one("security.max_sessions")},
	{Name: "max-sessions-per-ip", Usage: "at most `N` sessions per source (an IPv6 /64 as one); 0 is no cap",
		keys: []string{"security.max_sessions_per_ip"}, wireguardOnly: true, notForward: noPolicies, setRelay: one("security.max_sessions_per_ip")},
	{Name: "new-sessions-per-ip", Usage: "at most `RATE` new sessions per second per source; 0 leaves the built-in 20 (bursts of 40)",
		keys: []string{"security.new_sessions_per_ip"}, wireguardOnly: true, notForward: noPolicies, setRelay: one("security.new_sessions_per_ip")},
	{Name: "new-sessions-per-ip-burst", Usage: "bursts of `N` new sessions per source; 0 is the rate, at least 1",
		keys: []string{"security.new_sessions_per_ip_burst"}, wireguardOnly: true, notForward: noPolicies, setRelay: one("security.new_sessions_per_ip_burst")},
	{Name: "client-rate", Usage: "hold each client to `PPS[,BYTES]` per second each way, e.g. 5000,50MiB; 0 is no limit",
		keys: []string{"security.client_rate"}, wireguardOnly: true, notForward: noPolicies, setRelay: func(r *Relay, values []string) error {
			pps, bps, _ := strings.Cut(values[len(values)-1], ",")
			r.Security.ClientRate = ClientRate{}
			if err := relayKeys["security.client_rate.datagrams_per_second"](r, strings.TrimSpace(pps)); err != nil {
				return err
			}
			if bps == "" {
				return nil
			}
			return relayKeys["security.client_rate.bytes_per_second"](r, strings.TrimSpace(bps))
		}},
}

// clusterKey returns the setter of a cluster key for its flag. (The flag
// table is built before the cluster keys join fileKeys.)
func clusterKey(key string) func(f *File, s string) error {
	return func(f *File, s string) error { return clusterKeys[key](&f.Cluster, s) }
}

// Flags lists udpfwd's flags that set keys of the config, in the order of
// its help.
func Flags() []Flag { return append([]Flag(nil), flags...) }

// SetFlag applies flag name, given with values (one for each time it was
// given, in order), over f: a process-wide key once, a relay key in every
// relay (every wireguard relay, for the keys only that mode has). It
// overrides what the file said, and later messages about the keys name the
// flag ("--socket-buffer: ..."). A value is parsed even when no relay takes
// it, so a bad one is always refused. Over a static forward file (-f), a
// flag that does not apply to forward relays (the session and security
// flags, --state-file) is refused, as the file's keys would be.
func (f *File) SetFlag(name string, values ...string) error {
	i := -1
	for j := range flags {
		if flags[j].Name == name {
			i = j
		}
	}
	if i < 0 {
		return fmt.Errorf("%s: no such flag", name)
	}
	fl := &flags[i]
	origin := "--" + name
	fail := func(err error) error { return &Error{Flag: origin, Msg: err.Error(), Err: err} }
	switch {
	case len(values) == 0 && fl.Switch:
		values = []string{"true"}
	case len(values) == 0:
		return fail(errors.New("needs a value"))
	}
	if f.src == nil {
		f.src = &source{lines: map[string]int{}}
	}
	if f.src.forward && fl.notForward != "" {
		return fail(fmt.Errorf("not used in forward mode (-f): %s", fl.notForward))
	}
	if fl.setFile != nil || fl.setFileList != nil {
		var err error
		if fl.setFile != nil {
			err = fl.setFile(f, values[len(values)-1])
		} else {
			err = fl.setFileList(f, values)
		}
		if err != nil {
			return fail(err)
		}
		f.src.setBy(fl.keys[0], origin)
		return nil
	}
	var scratch Relay
	if err := fl.setRelay(&scratch, values); err != nil {
		return fail(err)
	}
	for j := range f.Relays {
		r := &f.Relays[j]
		if fl.wireguardOnly && r.Mode == ModeForward {
			continue
		}
		if err := fl.setRelay(r, values); err != nil {
			return fail(err)
		}
		for _, k := range fl.keys {
			f.src.setBy(fmt.Sprintf("relays[%d].%s", j, k), origin)
		}
	}
	return nil
}

// DefaultName is the name of the relay of "udpfwd -r LISTEN UPSTREAM".
const DefaultName = "default"

// FromArgs returns the config of "udpfwd -r LISTEN UPSTREAM": one wireguard
// relay named DefaultName. LISTEN may list several addresses and port
// ranges, and UPSTREAM several endpoints, separated by commas, as the keys
// take them. Messages about the two values name them as the help does
// (LISTEN, UPSTREAM). Flags are applied with SetFlag, then the whole is
// checked with Validate.
func FromArgs(listen, upstream string) (*File, error) {
	f := &File{Relays: []Relay{{Name: DefaultName, Mode: ModeWireGuard}}, src: &source{lines: map[string]int{}}}
	r := &f.Relays[0]
	if err := relayLists["listen"](r, listen); err != nil {
		return nil, &Error{Flag: "LISTEN", Msg: err.Error(), Err: err}
	}
	if err := relayLists["upstream"](r, upstream); err != nil {
		return nil, &Error{Flag: "UPSTREAM", Msg: err.Error(), Err: err}
	}
	f.src.setBy("relays[0].listen", "LISTEN")
	f.src.setBy("relays[0].upstream", "UPSTREAM")
	return f, nil
}

// WARPKeepalive is how often a WARP client sends a keepalive on an idle
// tunnel. A shorter idle_timeout ends an idle but connected client's
// session between two keepalives; its next datagram opens a new one, on a
// new upstream port, and so maybe on another WARP server.
const WARPKeepalive = 25 * time.Second
