package warptest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/device"
)

// ClientConfig configures [NewClient]; [Edge.NewClient] fills in the zero
// fields it can.
type ClientConfig struct {
	// ID is the client ID stamped into bytes 1..3 of every datagram; zero
	// sends plain WireGuard.
	ID ClientID
	// Endpoint is where the client sends its datagrams: the edge's router,
	// or a relay in front of it. Loopback only.
	Endpoint netip.AddrPort
	// PrivateKey is the client's key.
	PrivateKey Key
	// PeerKey is the edge's public key.
	PeerKey Key
	// TunnelAddr is the client's IPv4 address inside the tunnel.
	TunnelAddr netip.Addr
	// MTU is the tunnel MTU; zero means DefaultMTU.
	MTU int
	// PersistentKeepalive, if not zero, makes the client send a keepalive
	// after this long without sending (whole seconds, as WireGuard counts).
	PersistentKeepalive time.Duration
	// Logf, if set, receives wireguard-go's verbose log.
	Logf func(format string, args ...any)
	// KeepEndpoint keeps the client sending to the endpoint it was given
	// (Endpoint, or SetEndpoint's), as the WireGuard apps for phones do,
	// instead of following the source of the replies it authenticates.
	KeepEndpoint bool
}

// Client is a WARP-like WireGuard client: a wireguard-go device on a
// userspace stack, behind a [StampBind].
type Client struct {
	cfg  ClientConfig
	tun  *netTUN
	bind *StampBind
	dev  *device.Device
	peer *device.Peer

	roams atomic.Int64
	wg    sync.WaitGroup // transfers

	mu     sync.Mutex
	closed bool
}

// handshakePoll is how often handshake waits look at the device.
const handshakePoll = 5 * time.Millisecond

// NewClient starts a client. It sends nothing until asked to: call
// [Client.WaitHandshake], dial, or set PersistentKeepalive.
func NewClient(cfg ClientConfig) (*Client, error) {
	switch {
	case cfg.PrivateKey == (Key{}):
		return nil, errors.New("warptest: client without a private key")
	case cfg.PeerKey == (Key{}):
		return nil, errors.New("warptest: client without the edge's public key")
	case !cfg.TunnelAddr.IsValid():
		return nil, errors.New("warptest: client without a tunnel address")
	case !cfg.Endpoint.Addr().IsLoopback():
		return nil, fmt.Errorf("warptest: endpoint %v is not on loopback", cfg.Endpoint)
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	t, err := newNetTUN(cfg.TunnelAddr, cfg.MTU)
	if err != nil {
		return nil, err
	}
	bind := NewStampBind(cfg.ID)
	dev := device.NewDevice(t, bind, logger(cfg.Logf, "client "+cfg.ID.String()+": "))
	if cfg.KeepEndpoint {
		dev.DisableSomeRoamingForBrokenMobileSemantics()
	}
	c := &Client{cfg: cfg, tun: t, bind: bind, dev: dev}
	conf := fmt.Sprintf("private_key=%s\npublic_key=%s\nendpoint=%s\nallowed_ip=0.0.0.0/0\npersistent_keepalive_interval=%d\n",
		cfg.PrivateKey.Hex(), cfg.PeerKey.Hex(), cfg.Endpoint, int(cfg.PersistentKeepalive/time.Second))
	if err := dev.IpcSet(conf); err != nil {
		dev.Close()
		return nil, fmt.Errorf("warptest: configure client: %w", err)
	}
	c.peer = dev.LookupPeer(device.NoisePublicKey(cfg.PeerKey))
	if c.peer == nil {
		dev.Close()
		return nil, errors.New("warptest: client peer missing after configuration")
	}
	if err := dev.Up(); err != nil {
		dev.Close()
		return nil, fmt.Errorf("warptest: client up: %w", err)
	}
	return c, nil
}

// ID is the client ID the client stamps.
func (c *Client) ID() ClientID { return c.bind.ID() }

// TunnelAddr is the client's address inside the tunnel.
func (c *Client) TunnelAddr() netip.Addr { return c.cfg.TunnelAddr }

// Bind is the client's bind, for its counters.
func (c *Client) Bind() *StampBind { return c.bind }

// LocalAddr is the client's current local UDP address.
func (c *Client) LocalAddr() netip.AddrPort { return c.bind.LocalAddr() }

// Roams is how many times the client has moved to a new port.
func (c *Client) Roams() int { return int(c.roams.Load()) }

// Roam moves the client to a new local UDP port in the middle of whatever it
// is doing, and announces the new address at once with a keepalive, as a
// mobile client does after a network change. accept, if not nil, chooses
// among candidate addresses (say, one that the router hashes to another
// server). It returns the new local address.
func (c *Client) Roam(accept func(netip.AddrPort) bool) (netip.AddrPort, error) {
	addr, err := c.bind.Roam(accept)
	if err != nil {
		return netip.AddrPort{}, err
	}
	c.roams.Add(1)
	c.peer.SendKeepalive()
	return addr, nil
}

// RoamProbe is Roam choosing the new port with StampBind.RoamProbe.
func (c *Client) RoamProbe(probe func(*net.UDPConn) bool) (netip.AddrPort, error) {
	addr, err := c.bind.RoamProbe(probe)
	if err != nil {
		return netip.AddrPort{}, err
	}
	c.roams.Add(1)
	c.peer.SendKeepalive()
	return addr, nil
}

// SetEndpoint makes the client send to ep from now on, in the middle of
// whatever it is doing, as a client does that moves to another port of a
// relay (one that a network blocks, say): its session, keys and
// connections stay.
func (c *Client) SetEndpoint(ep netip.AddrPort) error {
	if !ep.Addr().IsLoopback() {
		return fmt.Errorf("warptest: endpoint %v is not on loopback", ep)
	}
	if err := c.dev.IpcSet(fmt.Sprintf("public_key=%s\nupdate_only=true\nendpoint=%s\n", c.cfg.PeerKey.Hex(), ep)); err != nil {
		return fmt.Errorf("warptest: set endpoint %v: %w", ep, err)
	}
	return nil
}

// LastHandshake is when the client last completed a handshake; the zero
// time if never.
func (c *Client) LastHandshake() time.Time {
	conf, err := c.dev.IpcGet()
	if err != nil {
		return time.Time{}
	}
	var sec, nsec int64
	sc := bufio.NewScanner(strings.NewReader(conf))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if sec == 0 && nsec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, nsec)
}

// WaitHandshake starts a handshake if the client has no session yet (by
// sending a keepalive) and waits until one has completed or ctx ends.
func (c *Client) WaitHandshake(ctx context.Context) error {
	if !c.LastHandshake().IsZero() {
		return nil
	}
	c.peer.SendKeepalive()
	return c.waitHandshakeAfter(ctx, time.Time{})
}

// Rehandshake throws the client's session keys away and waits until a new
// handshake has completed. wireguard-go does the same by itself on its first
// send after keys grew older than two minutes, which they always are after a
// relay's idle timeout of minutes; a test with a short timeout calls this.
func (c *Client) Rehandshake(ctx context.Context) error {
	before := c.LastHandshake()
	c.peer.ExpireCurrentKeypairs()
	c.peer.SendKeepalive()
	return c.waitHandshakeAfter(ctx, before)
}

func (c *Client) waitHandshakeAfter(ctx context.Context, before time.Time) error {
	tick := time.NewTicker(handshakePoll)
	defer tick.Stop()
	for {
		if hs := c.LastHandshake(); !hs.IsZero() && hs.After(before) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("warptest: no handshake: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// Dial opens a TCP connection through the tunnel to the edge service on port.
func (c *Client) Dial(ctx context.Context, port uint16) (net.Conn, error) {
	return c.tun.dialTCP(ctx, netip.AddrPortFrom(EdgeTunnelAddr, port))
}

// Echo sends payload to the edge's echo service and checks that it comes back.
func (c *Client) Echo(ctx context.Context, payload []byte) error {
	conn, err := c.Dial(ctx, EchoPort)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Write(payload)
		errc <- err
	}()
	got := make([]byte, len(payload))
	_, rerr := io.ReadFull(conn, got)
	werr := <-errc
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("warptest: echo: %w", ctx.Err())
	case werr != nil:
		return fmt.Errorf("warptest: echo write: %w", werr)
	case rerr != nil:
		return fmt.Errorf("warptest: echo read: %w", rerr)
	case !bytes.Equal(got, payload):
		return errors.New("warptest: echo came back different")
	}
	return nil
}

// Download starts fetching size bytes of the stream for seed from the edge's
// source, verifying every byte.
func (c *Client) Download(ctx context.Context, size int64, seed uint64) *Transfer {
	return c.start(ctx, "download", size, func(ctx context.Context, t *Transfer) error {
		return c.download(ctx, t, seed)
	})
}

// Upload starts sending size bytes of the stream for seed to the edge's sink,
// which verifies every byte and reports back.
func (c *Client) Upload(ctx context.Context, size int64, seed uint64) *Transfer {
	return c.start(ctx, "upload", size, func(ctx context.Context, t *Transfer) error {
		return c.upload(ctx, t, seed)
	})
}

func (c *Client) start(ctx context.Context, kind string, size int64, run func(context.Context, *Transfer) error) *Transfer {
	ctx, cancel := context.WithCancel(ctx)
	t := &Transfer{kind: kind, size: size, start: time.Now(), done: make(chan struct{}), cancel: cancel}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cancel()
		t.finish(fmt.Errorf("warptest: %s: client closed: %w", kind, net.ErrClosed))
		return t
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		defer cancel()
		err := run(ctx, t)
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("warptest: %s: %w (%v)", kind, ctx.Err(), err)
		}
		t.finish(err)
	}()
	return t
}

func (c *Client) request(ctx context.Context, port uint16, size int64, seed uint64) (net.Conn, func(), error) {
	conn, err := c.Dial(ctx, port)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	cleanup := func() { stop(); conn.Close() }
	var h [requestHeaderLen]byte
	putRequest(h[:], size, seed)
	if _, err := conn.Write(h[:]); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("warptest: send request: %w", err)
	}
	return conn, cleanup, nil
}

func (c *Client) download(ctx context.Context, t *Transfer, seed uint64) error {
	conn, cleanup, err := c.request(ctx, SourcePort, t.size, seed)
	if err != nil {
		return err
	}
	defer cleanup()
	v := newVerifier(seed)
	buf := make([]byte, chunk)
	var got int64
	for got < t.size {
		n, err := conn.Read(buf[:min(t.size-got, int64(len(buf)))])
		if n > 0 {
			if err := v.check(buf[:n]); err != nil {
				return err
			}
			got += int64(n)
			t.bytes.Store(got)
		}
		if err != nil && got < t.size {
			return fmt.Errorf("warptest: download ended at byte %d of %d: %w", got, t.size, err)
		}
	}
	return nil
}

func (c *Client) upload(ctx context.Context, t *Transfer, seed uint64) error {
	conn, cleanup, err := c.request(ctx, SinkPort, t.size, seed)
	if err != nil {
		return err
	}
	defer cleanup()
	s := NewStream(seed)
	buf := make([]byte, chunk)
	var sent int64
	for sent < t.size {
		n := int(min(t.size-sent, int64(len(buf))))
		_, _ = s.Read(buf[:n])
		if _, err := conn.Write(buf[:n]); err != nil {
			return fmt.Errorf("warptest: upload failed after byte %d of %d: %w", sent, t.size, err)
		}
		sent += int64(n)
		t.bytes.Store(sent)
	}
	var reply [sinkReplyLen]byte
	if _, err := io.ReadFull(conn, reply[:]); err != nil {
		return fmt.Errorf("warptest: upload: read the sink's verdict: %w", err)
	}
	if got := int64(getUint64(reply[1:])); reply[0] != sinkOK || got != t.size {
		return fmt.Errorf("warptest: upload: the sink verified %d of %d bytes", got, t.size)
	}
	return nil
}

// Close stops the client's transfers and device and waits for their
// goroutines.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.dev.Close()
	c.wg.Wait()
	return nil
}
