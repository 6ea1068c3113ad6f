package wgtest_test

import (
	"testing"

	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// The builders make what the parser accepts, with the fields they were given.
func TestBuilders(t *testing.T) {
	id := wgproto.ClientID{1, 2, 3}
	tests := []struct {
		name  string
		b     []byte
		typ   wgproto.Type
		index uint32
	}{
		{"initiation", wgtest.Initiation(id, 7), wgproto.TypeInitiation, 7},
		{"response", wgtest.Response(id, 8, 9), wgproto.TypeResponse, 8},
		{"cookie", wgtest.Cookie(id, 10), wgproto.TypeCookie, 10},
		{"transport", wgtest.Transport(id, 11, 12, 208), wgproto.TypeTransport, 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, v := wgproto.Parse(tt.b)
			if v != wgproto.OK || h.Type != tt.typ || h.Client != id || h.Index != tt.index {
				t.Fatalf("Parse = %+v, %v", h, v)
			}
		})
	}
}
