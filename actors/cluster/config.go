package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/udpfwd/udpfwd/internal/fileio"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

// HealthPortOffset places the static provider's HTTP health port: a
// node's cluster address is Bind (protoactor remote's gRPC port) and its
// health port is Bind's port + HealthPortOffset, on the same IP. Static peers
// are listed by their cluster addresses; the health ports follow by this rule,
// so an operator configures one address per node.
const HealthPortOffset = 1

// SessionKind is the cluster kind of a session: a session's cluster identity
// is its Key (Key.String: relay name and client ID in hex) with this kind.
const SessionKind = "session"

// Sizes that keep one gRPC message of protoactor remote under the gRPC limit.
// Remote's endpoint writer packs up to remoteWriterBatch queued messages into
// one gRPC message; its default (1000) times our largest message (a batch of
// 64 full buffers, about 133 KB) far exceeds gRPC's default 4 MB, and a message
// over the limit drops the connection with every queued Send (upstream issue
// 1114). 64 messages of at most maxBatchMessage bytes stay under grpcMaxMessage,
// which both ends accept.
const (
	remoteWriterBatch = 64
	// maxBatchMessage bounds one encoded Batch plus remote's envelope:
	// the datagrams, their length and address records, and a generous
	// allowance for the ids, the listening address and protobuf tags.
	maxBatchMessage = udpio.MaxBatch*(udpio.BufferSize+lenSize+addrSize) + 4096
	grpcMaxMessage  = 16 << 20
)

// Flow control of the cross-node datagram path, per peer: at most
// linkWindow batches are sent and not yet acknowledged (so remote's own
// unbounded queue holds at most that many of ours per peer), at most
// linkQueue more wait at the sender, and anything beyond is dropped and
// counted. The receiver acknowledges every ackEvery-th batch; linkWindow is a
// multiple of ackEvery, so a full window always has an acknowledgement coming.
// A window with no acknowledgement for ackTimeout is taken as lost (the peer
// died or the connection broke) and reopened.
const (
	linkWindow = 32
	linkQueue  = 32
	ackEvery   = 8
	ackTimeout = 2 * time.Second
)

// remoteConnectTries is how often remote's endpoint writer tries to connect
// to a peer before it gives up and dead-letters what was queued for it. Each
// failed try sleeps 2 s inside the writer (pinned remote), and stopping a
// node waits for a writer that is trying: protoactor's default of 5 made
// every Close after a peer's death take 10 s. A peer that is down for longer
// than this leaves the cluster anyway; a new message starts a new writer.
const remoteConnectTries = 2

// staticPollInterval is how often the static provider polls every
// peer's health port. protoactor's default is 2 s; 1 s notices a dead node
// in about a second (measured) at the price of one small HTTP request per
// peer per second.
const staticPollInterval = time.Second

// requestTimeout bounds a directory request (register, look up). Remote
// requests take about 200 µs on a LAN; a directory that does not answer in
// this time is on a node that died and has not yet been noticed.
const requestTimeout = 2 * time.Second

// Config selects how a node joins its cluster. Exactly one of Peers and Etcd
// is set. Flags and the config file fill it in cmd/; Start validates it.
type Config struct {
	// Name is the cluster's name; nodes of other names ignore each other.
	Name string
	// Bind is this node's cluster address: protoactor remote's gRPC port,
	// reachable by every other node. With static peers the health port is
	// Bind's port + HealthPortOffset on the same IP.
	Bind netip.AddrPort
	// Peers lists every node's Bind address (this node's may be included)
	// for static membership (static.go).
	Peers []netip.AddrPort
	// Etcd lists etcd client URLs for membership through etcd.
	Etcd []string
	// TLS, when set, makes all cluster gRPC traffic mutual TLS.
	TLS TLSFiles
	// Insecure allows a non-loopback Bind without TLS.
	Insecure bool
}

// TLSFiles names PEM files for mutual TLS between nodes: this node's
// certificate and key, and the CA that signed every node's certificate.
// Each node's certificate must name its Bind IP (an IP SAN): nodes dial each
// other by IP and verify the server's name, and each server requires a
// client certificate from the same CA.
type TLSFiles struct {
	Cert, Key, CA string
}

// set reports whether any TLS file is configured.
func (t TLSFiles) set() bool { return t.Cert != "" || t.Key != "" || t.CA != "" }

// Validate checks the configuration without touching the network.
func (c Config) Validate() error {
	if c.Name == "" {
		return errors.New("cluster name is empty")
	}
	if err := checkAddr("cluster bind", c.Bind); err != nil {
		return err
	}
	switch {
	case len(c.Peers) == 0 && len(c.Etcd) == 0:
		return errors.New("cluster needs peers (static membership) or etcd URLs")
	case len(c.Peers) > 0 && len(c.Etcd) > 0:
		return errors.New("cluster peers and etcd URLs are exclusive: choose one membership")
	}
	for _, p := range c.Peers {
		if err := checkAddr("cluster peer", p); err != nil {
			return err
		}
	}
	for _, u := range c.Etcd {
		if strings.TrimSpace(u) == "" {
			return errors.New("cluster etcd URL is empty")
		}
	}
	if c.TLS.set() && (c.TLS.Cert == "" || c.TLS.Key == "" || c.TLS.CA == "") {
		return errors.New("cluster TLS needs all three of cert, key and CA")
	}
	if c.TLS.set() && c.Insecure {
		return errors.New("cluster TLS and insecure are exclusive")
	}
	if !c.Bind.Addr().IsLoopback() && !c.TLS.set() && !c.Insecure {
		return fmt.Errorf("cluster bind %s is not loopback: cluster traffic carries client datagrams, so set TLS (cert, key, CA) or insecure explicitly", c.Bind)
	}
	return nil
}

// checkAddr accepts a concrete IPv4 address with a port that leaves room
// for the health port. IPv6 is refused: the pinned protoactor cluster
// writes member addresses as host:port without brackets, which no node can
// dial for an IPv6 host.
func checkAddr(what string, a netip.AddrPort) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("%s is not set", what)
	case a.Addr().Is6() && !a.Addr().Is4In6():
		return fmt.Errorf("%s %s: IPv6 is not supported (protoactor writes member addresses without brackets)", what, a)
	case a.Addr().IsUnspecified():
		return fmt.Errorf("%s %s: needs a concrete IP that other nodes can reach, not an unspecified one", what, a)
	case a.Port() == 0 || int(a.Port())+HealthPortOffset > 65535:
		return fmt.Errorf("%s %s: port must be 1..%d (the health port is port+%d)", what, a, 65535-HealthPortOffset, HealthPortOffset)
	}
	return nil
}

// healthAddr is the static provider's health address of the node whose cluster
// address is a.
func healthAddr(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()+HealthPortOffset)
}

// tlsConfigs loads the node's mutual-TLS configuration: the server side
// requires a client certificate signed by the CA; the client side presents
// this node's certificate and trusts only the CA.
func (t TLSFiles) tlsConfigs() (server, client *tls.Config, err error) {
	certPEM, err := fileio.ReadFile(t.Cert, fileio.MaxSize)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster TLS certificate: %w", err)
	}
	keyPEM, err := fileio.ReadFile(t.Key, fileio.MaxSize)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster TLS key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster TLS key pair: %w", err)
	}
	pem, err := fileio.ReadFile(t.CA, fileio.MaxSize)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("cluster TLS CA %s: no PEM certificate in it", t.CA)
	}
	server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}
	client = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
	}
	return server, client, nil
}

// remoteConfig builds protoactor remote's configuration: the gRPC port on
// Bind, message limits that fit remoteWriterBatch of our largest messages,
// and TLS or plain transport credentials. It returns the client TLS
// configuration too (nil without TLS), for etcd over https.
func (c Config) remoteConfig() (*remote.Config, *tls.Config, error) {
	serverOpts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(grpcMaxMessage),
		grpc.MaxSendMsgSize(grpcMaxMessage),
	}
	dialOpts := []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(grpcMaxMessage), grpc.MaxCallSendMsgSize(grpcMaxMessage)),
	}
	var clientTLS *tls.Config
	if c.TLS.set() {
		server, client, err := c.TLS.tlsConfigs()
		if err != nil {
			return nil, nil, err
		}
		clientTLS = client
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(server)))
		dialOpts = append(dialOpts, grpc.WithTransportCredentials(credentials.NewTLS(client)))
	} else {
		dialOpts = append(dialOpts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	rc := remote.Configure(c.Bind.Addr().Unmap().String(), int(c.Bind.Port()),
		remote.WithEndpointWriterBatchSize(remoteWriterBatch),
		remote.WithServerOptions(serverOpts...),
		remote.WithDialOptions(dialOpts...),
	)
	rc.MaxRetryCount = remoteConnectTries
	return rc, clientTLS, nil
}
