package main

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// The flood sends what each kind promises, and its mac1 is the one the
// relay checks (internal/wgproto, a separate implementation).
func TestFlood(t *testing.T) {
	pub, err := wgproto.ParsePublicKey(wgproto.WARPPublicKey)
	if err != nil {
		t.Fatal(err)
	}
	checker := wgproto.NewMAC1Checker(wgproto.NewMAC1Key(pub))
	for _, tt := range []struct {
		kind      string
		key       string
		validMAC1 bool
	}{
		{floodInitiation, wgproto.WARPPublicKey, true},
		{floodInitiation, "", false},
		{floodFresh, wgproto.WARPPublicKey, true},
		{floodJunk, "", false},
	} {
		t.Run(tt.kind+" key="+tt.key, func(t *testing.T) {
			sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			if _, _, err := setSockBuffers(sink, defaultSockBuf); err != nil {
				t.Fatal(err)
			}
			args := []string{"flood", "--target", sink.LocalAddr().String(), "--kind", tt.kind, "--duration", "100ms", "--rate", "2000"}
			if tt.key != "" {
				args = append(args, "--public-key", tt.key)
			}
			code, out, rep := runCLI(t, args...)
			if code != 0 || rep["sent"].(float64) < 1 {
				t.Fatalf("exit %d, report %v\n%s", code, rep, out)
			}
			var first []byte
			ids := map[[3]byte]bool{}
			same := true
			sink.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 2048)
			for n := 0; n < 100; n++ {
				k, err := sink.Read(buf)
				if err != nil {
					t.Fatalf("received %d datagrams: %v", n, err)
				}
				b := buf[:k]
				if k != wgproto.InitiationSize || b[0] != byte(wgproto.TypeInitiation) || b[1]|b[2]|b[3] == 0 {
					t.Fatalf("datagram %d is not an initiation with a client ID: %x", n, b[:4])
				}
				if checker.Valid(b) != tt.validMAC1 {
					t.Fatalf("datagram %d: mac1 valid %v, want %v", n, !tt.validMAC1, tt.validMAC1)
				}
				ids[[3]byte(b[1:4])] = true
				if first == nil {
					first = bytes.Clone(b)
				}
				rest := func(x []byte) []byte { y := bytes.Clone(x); copy(y[1:4], []byte{0, 0, 0}); return y }
				same = same && bytes.Equal(rest(b), rest(first))
			}
			if len(ids) < 90 {
				t.Errorf("%d client IDs in 100 datagrams, want them random", len(ids))
			}
			if want := tt.kind == floodInitiation; same != want {
				t.Errorf("all 100 datagrams the same but for their client ID: %v, want %v", same, want)
			}
		})
	}
}
