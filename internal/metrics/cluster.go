package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// ClusterStats is a snapshot of a cluster node's state (actors/cluster's
// Node.Stats, which this package cannot import).
type ClusterStats struct {
	Members int
	Healthy bool
	// Peers are the datagram links to the other nodes.
	Peers []ClusterPeer
	// Received counts datagrams other nodes forwarded here that reached a
	// session (or a replying actor).
	Received uint64
	// DroppedGone and DroppedMalformed count datagrams that arrived for a
	// session that had ended here, and in batches that did not decode.
	DroppedGone, DroppedMalformed uint64
	// Lookups counts the directory lookups of unknown client IDs, and
	// LookupMisses those that found no session on any node.
	Lookups, LookupMisses uint64
	// RegisterConflicts counts sessions of this node that lost their
	// client to another node's session opened first.
	RegisterConflicts uint64
	// Rejoins counts rejoins with a new member ID after the peers dropped
	// this node.
	Rejoins uint64
}

// ClusterPeer is one datagram link of a node.
type ClusterPeer struct {
	Peer                                  string
	Forwarded                             uint64
	DroppedFull, DroppedLeft, Unconfirmed uint64
}

// Cluster exports a cluster node's state as udpfwd_cluster_* metrics; a
// prometheus.Collector. Stats is read at each scrape.
type Cluster struct {
	stats func() ClusterStats

	members, healthy, forwarded, dropped, received, lookups, conflicts, rejoins *prometheus.Desc
}

// NewCluster returns the collector of the node whose state stats returns.
func NewCluster(stats func() ClusterStats) *Cluster {
	name := func(n string) string { return prometheus.BuildFQName(Namespace, "cluster", n) }
	return &Cluster{
		stats: stats,
		members: prometheus.NewDesc(name("members"),
			"Members of the cluster as this node sees them, itself included.", nil, nil),
		healthy: prometheus.NewDesc(name("healthy"),
			"1 if this node is in its own member view and no peer leaves it out, else 0 (its sessions are unreachable from the others).", nil, nil),
		forwarded: prometheus.NewDesc(name("forwarded_datagrams_total"),
			"Datagrams this node forwarded to another node's session (client datagrams of a roamed client, or replies sent back through an ingress node), by peer.", []string{"peer"}, nil),
		dropped: prometheus.NewDesc(name("dropped_datagrams_total"),
			"Datagrams lost on the way between nodes, by reason: queue_full (a peer slower than the traffic), peer_left, unconfirmed (never acknowledged), gone (the session had ended), malformed.", []string{"reason"}, nil),
		received: prometheus.NewDesc(name("received_datagrams_total"),
			"Datagrams other nodes forwarded to this node's sessions and replying actors.", nil, nil),
		lookups: prometheus.NewDesc(name("lookups_total"),
			"Directory lookups of client IDs that had no session here, by result: found (on another node) or miss.", []string{"result"}, nil),
		conflicts: prometheus.NewDesc(name("register_conflicts_total"),
			"Sessions of this node ended because another node had opened the same client's session first.", nil, nil),
		rejoins: prometheus.NewDesc(name("rejoins_total"),
			"Times this node rejoined with a new member ID after its static peers had dropped it.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Cluster) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.members, c.healthy, c.forwarded, c.dropped, c.received, c.lookups, c.conflicts, c.rejoins} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Cluster) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	gauge := func(d *prometheus.Desc, v float64, lvs ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lvs...)
	}
	counter := func(d *prometheus.Desc, v uint64, lvs ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lvs...)
	}
	gauge(c.members, float64(s.Members))
	gauge(c.healthy, b2f(s.Healthy))
	var full, left, unconfirmed uint64
	for _, p := range s.Peers {
		counter(c.forwarded, p.Forwarded, p.Peer)
		full += p.DroppedFull
		left += p.DroppedLeft
		unconfirmed += p.Unconfirmed
	}
	counter(c.dropped, full, "queue_full")
	counter(c.dropped, left, "peer_left")
	counter(c.dropped, unconfirmed, "unconfirmed")
	counter(c.dropped, s.DroppedGone, "gone")
	counter(c.dropped, s.DroppedMalformed, "malformed")
	counter(c.received, s.Received)
	counter(c.lookups, s.Lookups-min(s.LookupMisses, s.Lookups), "found")
	counter(c.lookups, s.LookupMisses, "miss")
	counter(c.conflicts, s.RegisterConflicts)
	counter(c.rejoins, s.Rejoins)
}
