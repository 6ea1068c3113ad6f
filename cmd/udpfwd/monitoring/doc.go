// Package monitoring holds what an operator loads into Grafana and
// Prometheus to watch udpfwd: grafana-dashboard.json (sessions against the
// cap, traffic, drops by reason, handshakes, upstream health, config
// loads) and alerts.yaml (Prometheus alert rules). It has no code; its test
// checks that every udpfwd metric they use is one the admin listener
// serves, so that a renamed metric cannot leave a dashboard blank.
package monitoring
