package wgproto_test

import (
	"bytes"
	"testing"

	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// A datagram refused only for its zero client ID comes with its whole
// header, so that a relay tracking plain clients can place it by the index
// the upstream assigned.
func TestParseZeroIDKeepsIndexes(t *testing.T) {
	zero := wgproto.ClientID{}
	tests := []struct {
		name         string
		b            []byte
		typ          wgproto.Type
		index, recv  uint32
		routeBy      uint32
		hasRecvIndex bool
	}{
		{"initiation", wgtest.Initiation(zero, 7), wgproto.TypeInitiation, 7, 0, 0, false},
		{"response", wgtest.Response(zero, 8, 9), wgproto.TypeResponse, 8, 9, 9, true},
		{"cookie", wgtest.Cookie(zero, 10), wgproto.TypeCookie, 10, 0, 10, true},
		{"keepalive", wgtest.Transport(zero, 11, 0, 32), wgproto.TypeTransport, 11, 0, 11, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, v := wgproto.Parse(tt.b)
			if v != wgproto.ZeroClient {
				t.Fatalf("verdict %v, want %v", v, wgproto.ZeroClient)
			}
			if h.Type != tt.typ || h.Index != tt.index || h.Receiver != tt.recv || !h.Client.IsZero() {
				t.Fatalf("header %+v, want type %v index %d receiver %d", h, tt.typ, tt.index, tt.recv)
			}
			idx, ok := h.ReceiverIndex()
			if ok != tt.hasRecvIndex || idx != tt.routeBy {
				t.Fatalf("ReceiverIndex = %d, %v; want %d, %v", idx, ok, tt.routeBy, tt.hasRecvIndex)
			}
		})
	}
}

// Type bytes 0xc1..0xc4 (the official WARP client's framing, as nDPI
// reports it) have a verdict of their own; the bytes around them do not.
func TestParseWARPTypes(t *testing.T) {
	for typ := 0xbf; typ <= 0xc6; typ++ {
		b := wgtest.Transport(id, 1, 0, 64)
		b[0] = byte(typ)
		want := wgproto.BadType
		if typ >= wgproto.FirstWARPType && typ <= wgproto.LastWARPType {
			want = wgproto.WARPType
		}
		if _, v := wgproto.Parse(b); v != want {
			t.Errorf("type %#x: verdict %v, want %v", typ, v, want)
		}
	}
	if got := wgproto.WARPType.String(); got != "warp_type" {
		t.Errorf("WARPType is named %q", got)
	}
}

// SetClient writes bytes 1..3 and nothing else; the zero ID clears them.
func TestSetClient(t *testing.T) {
	b := wgtest.Transport(wgproto.ClientID{}, 5, 6, 64)
	orig := bytes.Clone(b)
	wgproto.SetClient(b, id)
	if h, v := wgproto.Parse(b); v != wgproto.OK || h.Client != id || h.Index != 5 {
		t.Fatalf("after stamping: %+v, %v", h, v)
	}
	wgproto.SetClient(b, wgproto.ClientID{})
	if !bytes.Equal(b, orig) {
		t.Fatal("stamping and clearing changed more than bytes 1..3")
	}
	wgproto.SetClient(b[:3], id) // too short to have them: nothing happens
	if !bytes.Equal(b, orig) {
		t.Fatal("SetClient wrote into a datagram shorter than 4 bytes")
	}
}
