package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	lo := netip.MustParseAddrPort("127.0.0.1:7000")
	peers := []netip.AddrPort{lo, netip.MustParseAddrPort("127.0.0.2:7000")}
	pub := netip.MustParseAddrPort("192.0.2.10:7000")
	tlsFiles := TLSFiles{Cert: "c.pem", Key: "k.pem", CA: "ca.pem"}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; empty: valid
	}{
		{"loopback static", Config{Name: "c", Bind: lo, Peers: peers}, ""},
		{"loopback etcd", Config{Name: "c", Bind: lo, Etcd: []string{"http://127.0.0.1:2379"}}, ""},
		{"non-loopback without TLS", Config{Name: "c", Bind: pub, Peers: peers}, "not loopback"},
		{"non-loopback insecure", Config{Name: "c", Bind: pub, Peers: peers, Insecure: true}, ""},
		{"non-loopback TLS", Config{Name: "c", Bind: pub, Peers: peers, TLS: tlsFiles}, ""},
		{"TLS and insecure", Config{Name: "c", Bind: pub, Peers: peers, TLS: tlsFiles, Insecure: true}, "exclusive"},
		{"partial TLS", Config{Name: "c", Bind: pub, Peers: peers, TLS: TLSFiles{Cert: "c.pem"}}, "all three"},
		{"no name", Config{Bind: lo, Peers: peers}, "name"},
		{"no bind", Config{Name: "c", Peers: peers}, "bind is not set"},
		{"unspecified bind", Config{Name: "c", Bind: netip.MustParseAddrPort("0.0.0.0:7000"), Peers: peers, Insecure: true}, "concrete IP"},
		{"IPv6 bind", Config{Name: "c", Bind: netip.MustParseAddrPort("[::1]:7000"), Peers: peers}, "IPv6"},
		{"port 0", Config{Name: "c", Bind: netip.MustParseAddrPort("127.0.0.1:0"), Peers: peers}, "port"},
		{"last port leaves no health port", Config{Name: "c", Bind: netip.MustParseAddrPort("127.0.0.1:65535"), Peers: peers}, "port"},
		{"no membership", Config{Name: "c", Bind: lo}, "peers"},
		{"both memberships", Config{Name: "c", Bind: lo, Peers: peers, Etcd: []string{"http://127.0.0.1:2379"}}, "exclusive"},
		{"bad peer", Config{Name: "c", Bind: lo, Peers: []netip.AddrPort{{}}}, "peer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate() = %v, want an error about %q", err, tt.wantErr)
			case err != nil && strings.Contains(err.Error(), "\n"):
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

// TestNonLoopbackWithoutTLSIsRefused checks that Start refuses before it
// binds anything (192.0.2.0/24 is a documentation range, never used here).
func TestNonLoopbackWithoutTLSIsRefused(t *testing.T) {
	cfg := Config{Name: "c", Bind: netip.MustParseAddrPort("192.0.2.10:7000"), Peers: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.11:7000")}}
	_, err := Start(newSystem(t), cfg, zapNop())
	if err == nil || !strings.Contains(err.Error(), "not loopback") {
		t.Fatalf("Start = %v, want a refusal of a non-loopback bind without TLS", err)
	}
}

// testPKI writes a CA and, per name, a certificate and key for 127.0.0.1
// signed by it, into dir; it returns the files per name and the CA file.
func testPKI(t *testing.T, dir, prefix string, names ...string) (map[string]TLSFiles, *x509.CertPool) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: prefix + " test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	caFile := filepath.Join(dir, prefix+"-ca.pem")
	writePEM(t, caFile, "CERTIFICATE", caDER)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)

	out := map[string]TLSFiles{}
	for i, name := range names {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		f := TLSFiles{Cert: filepath.Join(dir, prefix+"-"+name+".pem"), Key: filepath.Join(dir, prefix+"-"+name+"-key.pem"), CA: caFile}
		writePEM(t, f.Cert, "CERTIFICATE", der)
		writePEM(t, f.Key, "EC PRIVATE KEY", keyDER)
		out[name] = f
	}
	return out, pool
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestMutualTLS runs two nodes whose cluster traffic is mutual TLS, and
// checks that a peer without a client certificate, or with one from
// another CA, is refused.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	files, pool := testPKI(t, dir, "cluster", "a", "b")
	rogue, _ := testPKI(t, dir, "rogue", "x")

	binds := []netip.AddrPort{freeBind(t), freeBind(t)}
	cfgs := staticConfigs("tls", binds...)
	cfgs[0].TLS, cfgs[1].TLS = files["a"], files["b"]
	ab := startNodes(t, cfgs...)
	a, b := ab[0], ab[1]
	waitMembers(t, ab, ab...)

	id := clientID(1)
	session, got := spawnSink(a, 1)
	if _, err := a.Register(id, session); err != nil {
		t.Fatal(err)
	}
	owner := b.Lookup(id)
	if !samePID(owner, session) {
		t.Fatalf("Lookup over mutual TLS = %v, want %v", owner, session)
	}
	listen := netip.MustParseAddrPort("192.0.2.1:2408")
	b.Forward(owner, id, listen, nil, batchOf(netip.MustParseAddrPort("198.51.100.7:5000"), transport(id, "tls", 80)))
	if d := recv(t, got); tagOf(d.payloads[0]) != "tls" {
		t.Fatalf("got %q over mutual TLS", d.payloads)
	}

	rogueCert, err := tls.LoadX509KeyPair(rogue["x"].Cert, rogue["x"].Key)
	if err != nil {
		t.Fatal(err)
	}
	goodCert, err := tls.LoadX509KeyPair(files["b"].Cert, files["b"].Key)
	if err != nil {
		t.Fatal(err)
	}
	// The control: a member's certificate gets the server's HTTP/2 greeting.
	if err := dialAndRead(binds[0].String(), &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{goodCert}, NextProtos: []string{"h2"}}); err != nil {
		t.Fatalf("a peer with a member's certificate: %v", err)
	}
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
	}{
		{"no client certificate", nil},
		{"certificate of another CA", []tls.Certificate{rogueCert}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := dialAndRead(binds[0].String(), &tls.Config{RootCAs: pool, Certificates: tc.certs, NextProtos: []string{"h2"}})
			var ne net.Error
			if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
				t.Fatalf("a peer with %s got %v, want a TLS refusal", tc.name, err)
			}
		})
	}
}

// dialAndRead completes a TLS handshake as a client and reads: with TLS 1.3
// the server's verdict on the client certificate arrives as an alert on the
// first read.
func dialAndRead(addr string, cfg *tls.Config) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: eventTimeout}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(eventTimeout))
	_, err = conn.Read(make([]byte, 1))
	return err
}
