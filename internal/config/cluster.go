package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Cluster is the top-level cluster block: several udpfwd processes (on one
// machine or many) behind one address, each session living on the node
// that admitted its client, and datagrams that reach another node
// forwarded to it (actors/cluster). Name empty is no cluster: nothing of it
// starts.
type Cluster struct {
	// Name is the cluster's name; nodes of other names ignore each other.
	Name string
	// Bind is this node's cluster address (ip:port), which the other
	// nodes reach; with static peers its port + 1 serves the health
	// document they poll.
	Bind netip.AddrPort
	// Peers lists every node's Bind address (static membership); Etcd
	// lists etcd client URLs (membership through etcd). Exactly one is
	// set.
	Peers []netip.AddrPort
	Etcd  []string
	// Reply says which node sends a forwarded client's replies:
	// ClusterReplyOwner (the session's own node, from its socket on the
	// shared address) or ClusterReplyIngress (the node that received the
	// client's latest datagram). Empty is owner.
	Reply ClusterReply
	// TLSCert, TLSKey and TLSCA make cluster traffic mutual TLS: all three
	// or none.
	TLSCert, TLSKey, TLSCA string
	// Insecure allows a non-loopback Bind without TLS.
	Insecure bool
}

// ClusterReply is the cluster.reply key's value.
type ClusterReply string

// The reply modes.
const (
	ClusterReplyOwner   ClusterReply = "owner"
	ClusterReplyIngress ClusterReply = "ingress"
)

// Enabled reports whether the config runs a cluster node.
func (c *Cluster) Enabled() bool { return c.Name != "" }

// Equal reports whether c and o are the same settings.
func (c *Cluster) Equal(o *Cluster) bool {
	return c.Name == o.Name && c.Bind == o.Bind && slices.Equal(c.Peers, o.Peers) && slices.Equal(c.Etcd, o.Etcd) &&
		c.Reply == o.Reply && c.TLSCert == o.TLSCert && c.TLSKey == o.TLSKey && c.TLSCA == o.TLSCA && c.Insecure == o.Insecure
}

// clusterKeys are the cluster block's single-value keys, by path.
var clusterKeys = map[string]func(c *Cluster, s string) error{
	"cluster.name": func(c *Cluster, s string) (err error) { c.Name, err = parseClusterName(s); return },
	"cluster.bind": func(c *Cluster, s string) (err error) {
		c.Bind = netip.AddrPort{}
		if s != "" {
			c.Bind, err = parseClusterAddr(s)
		}
		return
	},
	"cluster.reply":    func(c *Cluster, s string) (err error) { c.Reply, err = parseClusterReply(s); return },
	"cluster.tls_cert": func(c *Cluster, s string) error { c.TLSCert = s; return nil },
	"cluster.tls_key":  func(c *Cluster, s string) error { c.TLSKey = s; return nil },
	"cluster.tls_ca":   func(c *Cluster, s string) error { c.TLSCA = s; return nil },
	"cluster.insecure": func(c *Cluster, s string) (err error) { c.Insecure, err = parseBool(s); return },
}

// clusterLists are the cluster block's list keys: each call parses one
// element and appends it.
var clusterLists = map[string]func(c *Cluster, s string) error{
	"cluster.peers": func(c *Cluster, s string) error {
		a, err := parseClusterAddr(s)
		if err == nil {
			c.Peers = append(c.Peers, a)
		}
		return err
	},
	"cluster.etcd": func(c *Cluster, s string) error {
		if s == "" || strings.ContainsAny(s, " \t") {
			return fmt.Errorf("%q is not an etcd URL", s)
		}
		c.Etcd = append(c.Etcd, s)
		return nil
	},
}

func init() {
	for k, set := range clusterKeys {
		fileKeys[k] = func(f *File, s string) error { return set(&f.Cluster, s) }
	}
	for k, add := range clusterLists {
		fileLists[k] = func(f *File, s string) error { return add(&f.Cluster, s) }
	}
}

// parseClusterName reads a cluster's name: [a-z0-9_-]+, as a relay's.
func parseClusterName(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return "", fmt.Errorf("%q: want [a-z0-9_-]+", s)
		}
	}
	return s, nil
}

// parseClusterAddr reads a node's cluster address: a concrete IPv4
// address and a port that leaves room for the health port (port + 1).
// IPv6 is refused: the pinned protoactor cluster writes member addresses
// without brackets.
func parseClusterAddr(s string) (netip.AddrPort, error) {
	a, err := netip.ParseAddrPort(s)
	switch {
	case err != nil:
		return a, fmt.Errorf("%q is not ip:port", s)
	case !a.Addr().Unmap().Is4():
		return a, fmt.Errorf("%q: want an IPv4 address (the cluster layer cannot dial IPv6 members)", s)
	case a.Addr().IsUnspecified():
		return a, fmt.Errorf("%q: want an address the other nodes can reach, not 0.0.0.0", s)
	case a.Port() == 0 || a.Port() == 65535:
		return a, fmt.Errorf("%q: want a port 1..65534 (port + 1 is the health port)", s)
	}
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()), nil
}

// parseClusterReply reads cluster.reply.
func parseClusterReply(s string) (ClusterReply, error) {
	switch ClusterReply(s) {
	case "", ClusterReplyOwner:
		return ClusterReplyOwner, nil
	case ClusterReplyIngress:
		return ClusterReplyIngress, nil
	}
	return "", fmt.Errorf("%q: want owner or ingress", s)
}

// validate checks the cluster block as a whole.
func (c *Cluster) validate(p *problems) {
	if c.Reply == "" {
		c.Reply = ClusterReplyOwner
	}
	if !c.Enabled() {
		for _, set := range []struct {
			path string
			on   bool
		}{
			{"cluster.bind", c.Bind.IsValid()}, {"cluster.peers", len(c.Peers) > 0}, {"cluster.etcd", len(c.Etcd) > 0},
			{"cluster.tls_cert", c.TLSCert != ""}, {"cluster.tls_key", c.TLSKey != ""}, {"cluster.tls_ca", c.TLSCA != ""},
			{"cluster.insecure", c.Insecure},
		} {
			if set.on {
				p.add(set.path, nil, "cluster settings without a cluster name: set cluster.name (--cluster) or remove them")
				return
			}
		}
		return
	}
	tls := c.TLSCert != "" || c.TLSKey != "" || c.TLSCA != ""
	switch {
	case !c.Bind.IsValid():
		p.add("cluster.name", nil, "a cluster needs this node's address (cluster.bind, ip:port)")
	case len(c.Peers) == 0 && len(c.Etcd) == 0:
		p.add("cluster.name", nil, "a cluster needs its peers (static membership) or etcd URLs")
	case len(c.Peers) > 0 && len(c.Etcd) > 0:
		p.add("cluster.etcd", nil, "set peers or etcd, not both")
	case tls && (c.TLSCert == "" || c.TLSKey == "" || c.TLSCA == ""):
		p.add("cluster.tls_cert", nil, "cluster TLS needs all three of tls_cert, tls_key and tls_ca")
	case tls && c.Insecure:
		p.add("cluster.insecure", nil, "insecure and TLS are exclusive")
	case !c.Bind.Addr().IsLoopback() && !tls && !c.Insecure:
		p.add("cluster.bind", nil, "%s is not loopback: cluster traffic carries client datagrams, so set TLS (tls_cert, tls_key, tls_ca) or insecure: true", c.Bind)
	}
}

// outCluster is the cluster block in the effective config.
type outCluster struct {
	Name     string   `yaml:"name"`
	Bind     string   `yaml:"bind"`
	Peers    []string `yaml:"peers"`
	Etcd     []string `yaml:"etcd"`
	Reply    string   `yaml:"reply"`
	TLSCert  string   `yaml:"tls_cert"`
	TLSKey   string   `yaml:"tls_key"`
	TLSCA    string   `yaml:"tls_ca"`
	Insecure bool     `yaml:"insecure"`
}

func outClusterOf(c *Cluster) outCluster {
	o := outCluster{Name: c.Name, Peers: []string{}, Etcd: append([]string{}, c.Etcd...), Reply: string(c.Reply),
		TLSCert: c.TLSCert, TLSKey: c.TLSKey, TLSCA: c.TLSCA, Insecure: c.Insecure}
	if c.Bind.IsValid() {
		o.Bind = c.Bind.String()
	}
	for _, a := range c.Peers {
		o.Peers = append(o.Peers, a.String())
	}
	return o
}
