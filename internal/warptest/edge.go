package warptest

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"golang.zx2c4.com/wireguard/device"
)

// EdgeTunnelAddr is the address of the edge's services inside the tunnel.
// Every server has it, as every WARP server is the same peer to a client; it
// exists only inside the userspace stacks.
var EdgeTunnelAddr = netip.AddrFrom4([4]byte{10, 77, 0, 1})

// DefaultServers is the number of servers of an edge unless told otherwise.
const DefaultServers = 3

// EdgeConfig configures [NewEdge].
type EdgeConfig struct {
	// Servers is the number of WireGuard servers behind the router; zero
	// means DefaultServers.
	Servers int
	// Addr is where the router listens; it must be on loopback. The zero
	// value means 127.0.0.1 on a port the system picks.
	Addr netip.AddrPort
	// Endpoints is the number of routers in front of the servers, each
	// on an address of its own (the first at Addr, the others on ports
	// the system picks), as WARP answers on many addresses: a client may
	// reach the same servers through any of them. Zero means one.
	Endpoints int
	// EndpointAddrs, if set, are where the routers listen, one per
	// endpoint, all on loopback; it overrides Addr and Endpoints.
	EndpointAddrs []netip.AddrPort
	// MTU is the servers' tunnel MTU; zero means DefaultMTU. Clients made
	// with NewClient get the same unless told otherwise.
	MTU int
	// Logf, if set, receives wireguard-go's verbose log of every server.
	Logf func(format string, args ...any)
}

// Edge is a fake WARP edge: servers sharing one key pair behind an ECMP
// [Router], or several (one per endpoint address, all in front of the same
// servers). A client's session lives on the one server its datagrams are
// hashed to; another server drops its transport datagrams, and TCP
// connections through the tunnel live on that server's stack only.
type Edge struct {
	key     Key
	mtu     int
	router  *Router   // routers[0]
	routers []*Router // one per endpoint
	servers []*edgeServer

	mu     sync.Mutex
	nextIP uint32
	closed bool
}

type edgeServer struct {
	dev  *device.Device
	tun  *netTUN
	svcs *services
}

// NewEdge starts an edge on loopback. Close it when done.
func NewEdge(cfg EdgeConfig) (*Edge, error) {
	n := cfg.Servers
	if n == 0 {
		n = DefaultServers
	}
	if n < 0 {
		return nil, fmt.Errorf("warptest: %d servers", n)
	}
	addr := cfg.Addr
	if !addr.IsValid() {
		addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0)
	}
	if !addr.Addr().IsLoopback() {
		return nil, fmt.Errorf("warptest: edge address %v is not on loopback", addr)
	}
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	binds := make([]*serverBind, n)
	for i := range binds {
		binds[i] = newServerBind(i)
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	e := &Edge{key: key, mtu: mtu}
	addrs := cfg.EndpointAddrs
	if len(addrs) == 0 {
		addrs = []netip.AddrPort{addr}
		for range max(cfg.Endpoints, 1) - 1 {
			addrs = append(addrs, netip.AddrPortFrom(addr.Addr(), 0))
		}
	}
	for _, at := range addrs {
		if !at.Addr().IsLoopback() {
			e.Close()
			return nil, fmt.Errorf("warptest: edge address %v is not on loopback", at)
		}
		r, err := newRouter(at, binds)
		if err != nil {
			e.Close()
			return nil, err
		}
		e.routers = append(e.routers, r)
	}
	e.router = e.routers[0]
	for i := range n {
		s, err := startServer(key, mtu, binds[i], logger(cfg.Logf, fmt.Sprintf("server %d: ", i)))
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("warptest: server %d: %w", i, err)
		}
		e.servers = append(e.servers, s)
	}
	return e, nil
}

func logger(logf func(string, ...any), prefix string) *device.Logger {
	if logf == nil {
		return device.NewLogger(device.LogLevelSilent, "")
	}
	f := func(format string, args ...any) { logf(prefix+format, args...) }
	return &device.Logger{Verbosef: f, Errorf: f}
}

func startServer(key Key, mtu int, bind *serverBind, log *device.Logger) (*edgeServer, error) {
	t, err := newNetTUN(EdgeTunnelAddr, mtu)
	if err != nil {
		return nil, err
	}
	dev := device.NewDevice(t, bind, log)
	if err := dev.IpcSet("private_key=" + key.Hex() + "\n"); err != nil {
		dev.Close()
		return nil, fmt.Errorf("configure: %w", err)
	}
	if err := dev.Up(); err != nil {
		dev.Close()
		return nil, fmt.Errorf("up: %w", err)
	}
	svcs, err := startServices(t, EdgeTunnelAddr)
	if err != nil {
		dev.Close()
		return nil, err
	}
	return &edgeServer{dev: dev, tun: t, svcs: svcs}, nil
}

// Addr is the edge's public address: its (first) router's.
func (e *Edge) Addr() netip.AddrPort { return e.router.Addr() }

// Router is the edge's (first) ECMP router, for its statistics.
func (e *Edge) Router() *Router { return e.router }

// Endpoints are the addresses of the edge's routers, the first being Addr.
func (e *Edge) Endpoints() []netip.AddrPort {
	out := make([]netip.AddrPort, len(e.routers))
	for i, r := range e.routers {
		out[i] = r.Addr()
	}
	return out
}

// Routers are the edge's routers, one per endpoint, in the order of
// Endpoints.
func (e *Edge) Routers() []*Router { return append([]*Router(nil), e.routers...) }

// PublicKey is the public key all servers share.
func (e *Edge) PublicKey() Key { return e.key.PublicKey() }

// AddPeer lets the client with public key pub and tunnel address addr in on
// every server.
func (e *Edge) AddPeer(pub Key, addr netip.Addr) error {
	for i, s := range e.servers {
		if err := s.dev.IpcSet(fmt.Sprintf("public_key=%s\nallowed_ip=%s/32\n", pub.Hex(), addr)); err != nil {
			return fmt.Errorf("warptest: add peer to server %d: %w", i, err)
		}
	}
	return nil
}

// nextTunnelAddr hands out client tunnel addresses 10.77.0.2, 10.77.0.3, ...
func (e *Edge) nextTunnelAddr() (netip.Addr, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.nextIP >= 1<<16-3 {
		return netip.Addr{}, errors.New("warptest: out of client tunnel addresses")
	}
	e.nextIP++
	v := e.nextIP + 1
	return netip.AddrFrom4([4]byte{10, 77, byte(v >> 8), byte(v)}), nil
}

// NewClient makes a client of this edge: it fills in what cfg leaves zero (a
// fresh key, the next tunnel address, the edge's public key, the router as
// endpoint, the edge's MTU), lets the client in on every server and starts it.
func (e *Edge) NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.PrivateKey == (Key{}) {
		k, err := GenerateKey()
		if err != nil {
			return nil, err
		}
		cfg.PrivateKey = k
	}
	if !cfg.TunnelAddr.IsValid() {
		a, err := e.nextTunnelAddr()
		if err != nil {
			return nil, err
		}
		cfg.TunnelAddr = a
	}
	if cfg.PeerKey == (Key{}) {
		cfg.PeerKey = e.PublicKey()
	}
	if !cfg.Endpoint.IsValid() {
		cfg.Endpoint = e.Addr()
	}
	if cfg.MTU == 0 {
		cfg.MTU = e.mtu
	}
	if err := e.AddPeer(cfg.PrivateKey.PublicKey(), cfg.TunnelAddr); err != nil {
		return nil, err
	}
	return NewClient(cfg)
}

// Close stops the router and every server, and waits for their goroutines.
func (e *Edge) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	for _, r := range e.routers {
		r.close()
	}
	for _, s := range e.servers {
		s.svcs.close()
		s.dev.Close()
	}
	return nil
}
