package wgproto_test

import (
	"bufio"
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

var update = flag.Bool("update", false, "rewrite testdata/initiation-wireguard-go.txt from a real wireguard-go device")

const captureFile = "initiation-wireguard-go.txt"

// capture is one handshake initiation and the public key of the responder
// it was addressed to.
type capture struct {
	responder  wgproto.PublicKey
	initiation []byte
}

func readCapture(t *testing.T) capture {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", captureFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var c capture
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case !ok || strings.HasPrefix(k, "#"):
		case k == "responder_public_key":
			if c.responder, err = wgproto.ParsePublicKey(v); err != nil {
				t.Fatal(err)
			}
		case k == "initiation":
			if c.initiation, err = hex.DecodeString(v); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(c.initiation) != wgproto.InitiationSize || c.responder == (wgproto.PublicKey{}) {
		t.Fatalf("%s: incomplete capture", captureFile)
	}
	return c
}

func writeCapture(t *testing.T, c capture) {
	t.Helper()
	text := fmt.Sprintf("# A handshake initiation sent by a real wireguard-go device (bytes 1..3 zero,\n"+
		"# as wireguard-go sends them), and its responder's public key. Written by\n"+
		"# go test ./internal/wgproto -run TestMAC1RealWireGuard -args -update\n"+
		"responder_public_key = %s\ninitiation = %x\n", c.responder, c.initiation)
	if err := os.WriteFile(filepath.Join("testdata", captureFile), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkMAC1 asserts what mac1 covers on a real initiation to c.responder.
func checkMAC1(t *testing.T, c capture) {
	t.Helper()
	other, err := wgproto.ParsePublicKey(wgproto.WARPPublicKey)
	if err != nil {
		t.Fatal(err)
	}
	right := wgproto.NewMAC1Checker(wgproto.NewMAC1Key(c.responder))
	wrong := wgproto.NewMAC1Checker(wgproto.NewMAC1Key(other))

	plain := bytes.Clone(c.initiation)
	stamped := bytes.Clone(plain)
	copy(stamped[1:4], id[:]) // as a WARP client does after computing the MACs
	flip := func(i int) []byte {
		b := bytes.Clone(stamped)
		b[i] ^= 0x01
		return b
	}
	tests := []struct {
		name    string
		checker *wgproto.MAC1Checker
		b       []byte
		want    bool
	}{
		{"plain wireguard-go, right key", right, plain, true},
		{"client ID stamped, right key", right, stamped, true},
		{"other client ID stamped", right, func() []byte { b := bytes.Clone(stamped); copy(b[1:4], []byte{1, 2, 3}); return b }(), true},
		{"client ID stamped, other key", wrong, stamped, false},
		{"plain, other key", wrong, plain, false},
		{"type byte flipped", right, flip(0), false},
		{"sender index flipped", right, flip(4), false},
		{"ephemeral flipped", right, flip(8), false},
		{"timestamp flipped", right, flip(115), false},
		{"mac1 first byte flipped", right, flip(116), false},
		{"mac1 last byte flipped", right, flip(131), false},
		{"mac2 flipped (not covered)", right, flip(132), true},
		{"short", right, stamped[:147], false},
		{"long", right, append(bytes.Clone(stamped), 0), false},
		{"empty", right, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := bytes.Clone(tt.b)
			if got := tt.checker.Valid(tt.b); got != tt.want {
				t.Fatalf("Valid = %v, want %v", got, tt.want)
			}
			if !bytes.Equal(before, tt.b) {
				t.Fatal("Valid modified the datagram")
			}
		})
	}
}

// TestMAC1Captured checks mac1 on an initiation captured from a real
// wireguard-go device, so it runs without starting one.
func TestMAC1Captured(t *testing.T) {
	checkMAC1(t, readCapture(t))
}

// TestMAC1RealWireGuard starts a real wireguard-go client device (netstack
// TUN, a bind on 127.0.0.1) whose peer is a plain UDP socket on 127.0.0.1,
// captures the handshake initiation it sends, and checks its mac1 the way
// the relay does. With -update it rewrites the committed capture.
func TestMAC1RealWireGuard(t *testing.T) {
	server, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	serverKey, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	clientKey, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	tunDev, _, err := netstack.CreateNetTUN([]netip.Addr{netip.MustParseAddr("10.8.0.2")}, nil, 1420)
	if err != nil {
		t.Fatal(err)
	}
	dev := device.NewDevice(tunDev, &loopBind{}, device.NewLogger(device.LogLevelSilent, ""))
	defer dev.Close()
	cfg := fmt.Sprintf("private_key=%x\npublic_key=%x\nendpoint=%s\nallowed_ip=10.8.0.1/32\npersistent_keepalive_interval=1\n",
		clientKey.Bytes(), serverKey.PublicKey().Bytes(), server.LocalAddr())
	if err := dev.IpcSet(cfg); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}

	// Generous: only a failing test waits it out.
	if err := server.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n, _, err := server.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no initiation from wireguard-go: %v", err)
	}
	got := buf[:n]
	h, v := wgproto.Parse(got)
	if h.Type != wgproto.TypeInitiation || len(got) != wgproto.InitiationSize {
		t.Fatalf("got a %d-byte %v (verdict %v), want a handshake initiation", len(got), h.Type, v)
	}
	if v != wgproto.ZeroClient {
		t.Fatalf("plain wireguard-go sent client ID %v, want zeros", h.Client)
	}
	c := capture{initiation: bytes.Clone(got)}
	copy(c.responder[:], serverKey.PublicKey().Bytes())
	checkMAC1(t, c)
	if *update {
		writeCapture(t, c)
	}
}

func TestParsePublicKey(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"WARP", wgproto.WARPPublicKey, true},
		{"WARP with spaces", " " + wgproto.WARPPublicKey + "\n", true},
		{"empty", "", false},
		{"31 bytes", "bmXOC+F1FxEMF9dyiK2H5/1SUtzH0JuVo51h2wPfgw==", false},
		{"33 bytes", "bmXOC+F1FxEMF9dyiK2H5/1SUtzH0JuVo51h2wPfgyoA", false},
		{"url alphabet", "bmXOC-F1FxEMF9dyiK2H5_1SUtzH0JuVo51h2wPfgyo=", false},
		{"hex", "6e65ce0be175171100c5f7728ad87fe54a52dcc7d09b95a39d61db03df832a", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := wgproto.ParsePublicKey(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if !tt.ok {
				if !errors.Is(err, wgproto.ErrPublicKeySyntax) {
					t.Fatalf("err = %v, want ErrPublicKeySyntax", err)
				}
				return
			}
			if k.String() != strings.TrimSpace(tt.in) {
				t.Fatalf("String = %q, want %q", k, strings.TrimSpace(tt.in))
			}
		})
	}
}

// TestMAC1Synthetic checks the MAC construction independently of
// wireguard-go: a message whose mac1 was computed by hand verifies.
func TestMAC1Synthetic(t *testing.T) {
	k, err := wgproto.ParsePublicKey(wgproto.WARPPublicKey)
	if err != nil {
		t.Fatal(err)
	}
	key := wgproto.NewMAC1Key(k)
	if key == (wgproto.MAC1Key{}) {
		t.Fatal("zero mac1 key")
	}
	// mac1 by hand: keyed BLAKE2s-128 over bytes 0..115, bytes 1..3 zero.
	b := wgtest.Initiation(id, 7)
	mac, err := blake2s.New128(key[:])
	if err != nil {
		t.Fatal(err)
	}
	mac.Write(b[:1])
	mac.Write([]byte{0, 0, 0})
	mac.Write(b[4:wgproto.InitiationMAC1Offset])
	copy(b[wgproto.InitiationMAC1Offset:], mac.Sum(nil))
	c := wgproto.NewMAC1Checker(key)
	if !c.Valid(b) {
		t.Fatal("Valid = false for a message with its mac1")
	}
	b[1] ^= 0xff
	if !c.Valid(b) {
		t.Fatal("Valid = false after changing the client ID")
	}
	if c.Valid(wgtest.Initiation(id, 7)) {
		t.Fatal("Valid = true for filler where mac1 belongs")
	}
}

// TestPutMAC1 checks that PutMAC1 reproduces the mac1 a real wireguard-go
// device computed, with or without a client ID stamped.
func TestPutMAC1(t *testing.T) {
	c := readCapture(t)
	key := wgproto.NewMAC1Key(c.responder)
	b := bytes.Clone(c.initiation)
	copy(b[1:4], id[:])
	clear(b[wgproto.InitiationMAC1Offset : wgproto.InitiationMAC1Offset+wgproto.MACSize])
	wgproto.PutMAC1(b, key)
	if !bytes.Equal(b[4:], c.initiation[4:]) {
		t.Fatalf("PutMAC1 wrote mac1 %x, wireguard-go %x",
			b[wgproto.InitiationMAC1Offset:wgproto.InitiationMAC2Offset],
			c.initiation[wgproto.InitiationMAC1Offset:wgproto.InitiationMAC2Offset])
	}
}

func TestMAC1Allocs(t *testing.T) {
	c := wgproto.NewMAC1Checker(wgproto.NewMAC1Key(wgproto.PublicKey{1}))
	b := wgtest.Initiation(id, 1)
	if n := testing.AllocsPerRun(1000, func() { c.Valid(b) }); n != 0 {
		t.Fatalf("Valid allocates %v times, want 0", n)
	}
}

func BenchmarkMAC1Valid(b *testing.B) {
	c := wgproto.NewMAC1Checker(wgproto.NewMAC1Key(wgproto.PublicKey{1}))
	d := wgtest.Initiation(id, 1)
	b.ReportAllocs()
	for b.Loop() {
		c.Valid(d)
	}
}

// loopBind is a wireguard-go conn.Bind on one UDP socket on 127.0.0.1, so
// the device under test never listens beyond loopback.
type loopBind struct {
	c *net.UDPConn
}

func (b *loopBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
	if err != nil {
		return nil, 0, fmt.Errorf("loopBind: %w", err)
	}
	b.c = c
	recv := func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, from, err := c.ReadFromUDPAddrPort(packets[0])
		if err != nil {
			return 0, err
		}
		sizes[0], eps[0] = n, loopEndpoint(from)
		return 1, nil
	}
	return []conn.ReceiveFunc{recv}, uint16(c.LocalAddr().(*net.UDPAddr).Port), nil
}

func (b *loopBind) Close() error {
	if b.c == nil {
		return nil
	}
	err := b.c.Close()
	b.c = nil
	return err
}

func (b *loopBind) SetMark(uint32) error { return nil }

func (b *loopBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	if b.c == nil {
		return net.ErrClosed
	}
	to := netip.AddrPort(ep.(loopEndpoint))
	if !to.Addr().IsLoopback() {
		return fmt.Errorf("loopBind: refusing to send to %v", to)
	}
	for _, buf := range bufs {
		if _, err := b.c.WriteToUDPAddrPort(buf, to); err != nil {
			return err
		}
	}
	return nil
}

func (b *loopBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return loopEndpoint(ap), nil
}

func (b *loopBind) BatchSize() int { return 1 }

type loopEndpoint netip.AddrPort

func (e loopEndpoint) ClearSrc()           {}
func (e loopEndpoint) SrcToString() string { return "" }
func (e loopEndpoint) DstToString() string { return netip.AddrPort(e).String() }
func (e loopEndpoint) DstToBytes() []byte  { b, _ := netip.AddrPort(e).MarshalBinary(); return b }
func (e loopEndpoint) DstIP() netip.Addr   { return netip.AddrPort(e).Addr() }
func (e loopEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }
