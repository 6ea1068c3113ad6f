package config

import (
	"bytes"
	"fmt"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// The out* types give the effective config its YAML shape: every key
// spelled as in the file, in the order of the example config, with values
// written the way a person would. Keys that a mode does not use are
// pointers, left out for that mode.
type outFile struct {
	Log             outLog     `yaml:"log"`
	Admin           string     `yaml:"admin"`
	AdminTokenFile  string     `yaml:"admin_token_file"`
	AdminAllowHosts []string   `yaml:"admin_allow_hosts"`
	StateFile       string     `yaml:"state_file"`
	Cluster         outCluster `yaml:"cluster"`
	Relays          []outRelay `yaml:"relays"`
}

type outLog struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

type outRelay struct {
	Name            string       `yaml:"name"`
	Mode            string       `yaml:"mode"`
	Listen          []string     `yaml:"listen"`
	Upstream        any          `yaml:"upstream"` // one host:port, or a list for a pool
	FailoverAfter   *int         `yaml:"failover_after,omitempty"`
	IdleTimeout     *string      `yaml:"idle_timeout,omitempty"`
	ResolveInterval *string      `yaml:"resolve_interval,omitempty"`
	UpstreamBind    string       `yaml:"upstream_bind"`
	UpstreamPorts   *string      `yaml:"upstream_ports,omitempty"`
	ReadBuffer      any          `yaml:"read_buffer"`
	WriteBuffer     any          `yaml:"write_buffer"`
	GSO             bool         `yaml:"gso"`
	Workers         any          `yaml:"workers,omitempty"`
	ReusePort       bool         `yaml:"reuse_port"`
	ZeroID          *string      `yaml:"zero_id,omitempty"`
	StampClientID   *string      `yaml:"stamp_client_id,omitempty"`
	MessageTypes    *string      `yaml:"message_types,omitempty"`
	Security        *outSecurity `yaml:"security,omitempty"`
}

type outSecurity struct {
	UpstreamPublicKey     string        `yaml:"upstream_public_key"`
	AllowClients          []string      `yaml:"allow_clients"`
	AllowCIDRs            []string      `yaml:"allow_cidrs"`
	DenyCIDRs             []string      `yaml:"deny_cidrs"`
	MaxSessions           int           `yaml:"max_sessions"`
	MaxSessionsPerIP      int           `yaml:"max_sessions_per_ip"`
	NewSessionsPerIP      float64       `yaml:"new_sessions_per_ip"`
	NewSessionsPerIPBurst int           `yaml:"new_sessions_per_ip_burst"`
	ClientRate            outClientRate `yaml:"client_rate"`
}

type outClientRate struct {
	DatagramsPerSecond float64 `yaml:"datagrams_per_second"`
	BytesPerSecond     any     `yaml:"bytes_per_second"`
}

// Effective validates f (filling in defaults) and writes it as YAML with
// every key the relays use, for "udpfwd check". Parse reads the output
// back to an equal configuration.
func (f *File) Effective() ([]byte, error) {
	if _, err := f.Validate(); err != nil {
		return nil, err
	}
	out := outFile{
		Log:             outLog{Level: f.Log.Level, Format: f.Log.Format},
		Admin:           f.Admin,
		AdminTokenFile:  f.AdminTokenFile,
		AdminAllowHosts: append([]string{}, f.AdminAllowHosts...),
		StateFile:       f.StateFile,
		Cluster:         outClusterOf(&f.Cluster),
	}
	for i := range f.Relays {
		out.Relays = append(out.Relays, outRelayOf(&f.Relays[i]))
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("write effective config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("write effective config: %w", err)
	}
	return b.Bytes(), nil
}

func outRelayOf(r *Relay) outRelay {
	o := outRelay{
		Name:        r.Name,
		Mode:        string(r.Mode),
		Listen:      make([]string, 0, len(r.Listen)),
		Upstream:    r.Upstream.String(),
		ReadBuffer:  sizeValue(int64(r.ReadBuffer)),
		WriteBuffer: sizeValue(int64(r.WriteBuffer)),
		GSO:         !r.NoGSO,
		ReusePort:   r.ReusePort,
	}
	for _, l := range r.Listen {
		o.Listen = append(o.Listen, l.String())
	}
	if eps := r.Endpoints(); len(eps) > 1 {
		list := make([]string, len(eps))
		for i, h := range eps {
			list[i] = h.String()
		}
		o.Upstream = list
	}
	switch {
	case !r.UpstreamBind.IsValid():
	case r.UpstreamBind.Port() == 0:
		o.UpstreamBind = r.UpstreamBind.Addr().String()
	default:
		o.UpstreamBind = r.UpstreamBind.String()
	}
	if r.Mode == ModeForward {
		return o
	}
	idle, resolve, ports := FormatDuration(r.IdleTimeout), FormatDuration(r.ResolveInterval), ""
	if !r.UpstreamPorts.IsZero() {
		ports = r.UpstreamPorts.String()
	}
	o.IdleTimeout, o.ResolveInterval, o.UpstreamPorts = &idle, &resolve, &ports
	o.Workers = "auto"
	if r.Workers > 0 {
		o.Workers = r.Workers
	}
	failover := r.FailoverAfter
	o.FailoverAfter = &failover
	zero, stamp, types := string(r.ZeroID), "", string(r.MessageTypes)
	if !r.StampClientID.IsZero() {
		stamp = r.StampClientID.String()
	}
	o.ZeroID, o.StampClientID, o.MessageTypes = &zero, &stamp, &types
	s := &r.Security
	sec := &outSecurity{
		AllowClients:          make([]string, 0, len(s.AllowClients)),
		AllowCIDRs:            make([]string, 0, len(s.AllowCIDRs)),
		DenyCIDRs:             make([]string, 0, len(s.DenyCIDRs)),
		MaxSessions:           s.MaxSessions,
		MaxSessionsPerIP:      s.MaxSessionsPerIP,
		NewSessionsPerIP:      s.NewSessionsPerIP,
		NewSessionsPerIPBurst: s.NewSessionsPerIPBurst,
		ClientRate: outClientRate{
			DatagramsPerSecond: s.ClientRate.DatagramsPerSecond,
			BytesPerSecond:     sizeValue(s.ClientRate.BytesPerSecond),
		},
	}
	if !s.UpstreamPublicKey.IsZero() {
		sec.UpstreamPublicKey = s.UpstreamPublicKey.String()
	}
	for _, id := range s.AllowClients {
		sec.AllowClients = append(sec.AllowClients, id.String())
	}
	for _, p := range s.AllowCIDRs {
		sec.AllowCIDRs = append(sec.AllowCIDRs, p.String())
	}
	for _, p := range s.DenyCIDRs {
		sec.DenyCIDRs = append(sec.DenyCIDRs, p.String())
	}
	o.Security = sec
	return o
}

// sizeValue writes a byte size with a unit when one divides it ("4MiB"),
// else as a plain number.
func sizeValue(n int64) any {
	if s := FormatByteSize(n); s != strconv.FormatInt(n, 10) {
		return s
	}
	return n
}
