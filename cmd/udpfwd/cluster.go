package main

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/cluster"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/metrics"
)

// clusterConfigOf turns the config's cluster block into the node's config.
func clusterConfigOf(c config.Cluster) cluster.Config {
	return cluster.Config{
		Name: c.Name, Bind: c.Bind, Peers: c.Peers, Etcd: c.Etcd, Insecure: c.Insecure,
		TLS: cluster.TLSFiles{Cert: c.TLSCert, Key: c.TLSKey, CA: c.TLSCA},
	}
}

// startCluster starts this process's cluster node, if the config names a
// cluster, before any relay: the relays' sessions must be actors other
// nodes can reach. Membership changes are logged.
func (d *daemon) startCluster(c config.Cluster) error {
	d.clusterConfig = c
	if !c.Enabled() {
		return nil
	}
	cfg := clusterConfigOf(c)
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	log := d.log.With(zap.String("cluster", c.Name))
	// Subscribed before the node starts: its first membership changes
	// happen while it starts.
	d.clusterSub = d.system.EventStream.Subscribe(func(evt any) {
		switch m := evt.(type) {
		case *cluster.MemberJoined:
			log.Info("cluster member joined", zap.Stringer("member", m.Address), zap.String("member_id", m.ID))
		case *cluster.MemberLeft:
			log.Warn("cluster member left: its sessions are gone; their clients get new ones at their next handshake",
				zap.Stringer("member", m.Address), zap.String("member_id", m.ID))
		}
	})
	n, err := cluster.Start(d.system, cfg, d.log.Named("cluster"))
	if err != nil {
		d.system.EventStream.Unsubscribe(d.clusterSub)
		return fmt.Errorf("start cluster %s: %w", c.Name, err)
	}
	d.cluster, d.clusterOwner = n, c.Reply != config.ClusterReplyIngress
	log.Info("cluster node started", zap.Stringer("bind", c.Bind), zap.String("reply", string(c.Reply)),
		zap.Int("peers", len(c.Peers)), zap.Int("etcd", len(c.Etcd)))
	return nil
}

// stopCluster leaves the cluster, after the relays have stopped.
func (d *daemon) stopCluster() {
	if d.cluster == nil {
		return
	}
	d.system.EventStream.Unsubscribe(d.clusterSub)
	d.cluster.Close()
	d.cluster = nil
}

// clusterMetrics is the collector of the cluster node's metrics, nil
// without a cluster.
func (d *daemon) clusterMetrics() *metrics.Cluster {
	n := d.cluster
	if n == nil {
		return nil
	}
	return metrics.NewCluster(func() metrics.ClusterStats {
		st := n.Stats()
		out := metrics.ClusterStats{
			Members: st.Members, Healthy: st.Healthy, Received: st.Received,
			DroppedGone: st.DroppedGone, DroppedMalformed: st.DroppedMalformed,
			Lookups: st.Lookups, LookupMisses: st.LookupMisses,
			RegisterConflicts: st.RegisterConflicts, Rejoins: st.Rejoins,
		}
		for _, p := range st.Peers {
			out.Peers = append(out.Peers, metrics.ClusterPeer{Peer: p.Peer, Forwarded: p.Forwarded,
				DroppedFull: p.DroppedFull, DroppedLeft: p.DroppedLeft, Unconfirmed: p.Unconfirmed})
		}
		return out
	})
}

// relayOptions are the options every relay of the daemon starts with.
func (d *daemon) relayOptions() []relay.Option {
	opts := []relay.Option{relay.WithSystem(d.system)}
	if d.cluster != nil {
		opts = append(opts, relay.WithCluster(d.cluster, d.clusterOwner))
	}
	return opts
}
