package wgproto_test

import (
	"bytes"
	"testing"

	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

var id = wgproto.ClientID{0xa8, 0x1a, 0x15}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		b       []byte
		want    wgproto.Verdict
		typ     wgproto.Type
		index   uint32
		recv    uint32
		comment string
	}{
		{name: "initiation", b: wgtest.Initiation(id, 7), want: wgproto.OK, typ: wgproto.TypeInitiation, index: 7},
		{name: "response", b: wgtest.Response(id, 8, 9), want: wgproto.OK, typ: wgproto.TypeResponse, index: 8, recv: 9},
		{name: "cookie", b: wgtest.Cookie(id, 10), want: wgproto.OK, typ: wgproto.TypeCookie, index: 10},
		{name: "keepalive", b: wgtest.Transport(id, 11, 0, 32), want: wgproto.OK, typ: wgproto.TypeTransport, index: 11},
		{name: "transport 1392", b: wgtest.Transport(id, 12, 5, 1392), want: wgproto.OK, typ: wgproto.TypeTransport, index: 12},
		{name: "empty", b: nil, want: wgproto.BadType},
		{name: "three bytes", b: []byte{1, 2, 3}, want: wgproto.BadType},
		{name: "type 0", b: append([]byte{0, 1, 2, 3}, make([]byte, 144)...), want: wgproto.BadType},
		{name: "type 5", b: append([]byte{5, 1, 2, 3}, make([]byte, 28)...), want: wgproto.BadType},
		{name: "type 255", b: append([]byte{255, 1, 2, 3}, make([]byte, 28)...), want: wgproto.BadType},
		{name: "initiation 147", b: wgtest.Initiation(id, 1)[:147], want: wgproto.BadSize},
		{name: "initiation 149", b: append(wgtest.Initiation(id, 1), 0), want: wgproto.BadSize},
		{name: "response 91", b: wgtest.Response(id, 1, 2)[:91], want: wgproto.BadSize},
		{name: "response 93", b: append(wgtest.Response(id, 1, 2), 0), want: wgproto.BadSize},
		{name: "cookie 63", b: wgtest.Cookie(id, 1)[:63], want: wgproto.BadSize},
		{name: "cookie 65", b: append(wgtest.Cookie(id, 1), 0), want: wgproto.BadSize},
		{name: "transport 16", b: wgtest.Transport(id, 1, 0, 16), want: wgproto.BadSize},
		{name: "transport 31", b: wgtest.Transport(id, 1, 0, 31), want: wgproto.BadSize},
		{name: "transport 33", b: wgtest.Transport(id, 1, 0, 33), want: wgproto.BadSize},
		{name: "transport 40", b: wgtest.Transport(id, 1, 0, 40), want: wgproto.BadSize},
		{name: "zero ID initiation", b: wgtest.Initiation(wgproto.ClientID{}, 1), want: wgproto.ZeroClient, typ: wgproto.TypeInitiation},
		{name: "zero ID transport", b: wgtest.Transport(wgproto.ClientID{}, 1, 0, 64), want: wgproto.ZeroClient, typ: wgproto.TypeTransport},
		{name: "ID with zero bytes", b: wgtest.Transport(wgproto.ClientID{0, 0, 1}, 1, 0, 64), want: wgproto.OK, typ: wgproto.TypeTransport, index: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := bytes.Clone(tt.b)
			h, v := wgproto.Parse(tt.b)
			if v != tt.want {
				t.Fatalf("verdict %v, want %v", v, tt.want)
			}
			if !bytes.Equal(before, tt.b) {
				t.Fatal("Parse modified the datagram")
			}
			if v != wgproto.OK {
				return
			}
			if h.Type != tt.typ || h.Index != tt.index || h.Receiver != tt.recv {
				t.Fatalf("header %+v, want type %v index %d receiver %d", h, tt.typ, tt.index, tt.recv)
			}
			if h.Client != wgproto.ClientID(tt.b[1:4]) {
				t.Fatalf("client %v, want bytes 1..3 %x", h.Client, tt.b[1:4])
			}
		})
	}
}

func TestParseAllocs(t *testing.T) {
	b := wgtest.Transport(id, 1, 2, 208)
	if n := testing.AllocsPerRun(1000, func() { wgproto.Parse(b) }); n != 0 {
		t.Fatalf("Parse allocates %v times, want 0", n)
	}
}

func TestClientIDForms(t *testing.T) {
	if got := id.String(); got != "a81a15" {
		t.Errorf("String = %q", got)
	}
	if got := id.Base64(); got != "qBoV" {
		t.Errorf("Base64 = %q", got)
	}
	if got := id.Triple(); got != "[168, 26, 21]" {
		t.Errorf("Triple = %q", got)
	}
}

func TestParseClientID(t *testing.T) {
	tests := []struct {
		in    string
		ok    bool
		value wgproto.ClientID
	}{
		{"qBoV", true, id},
		{"a81a15", true, id},
		{"A81A15", true, id},
		{"0xa81a15", true, id},
		{"168,26,21", true, id},
		{"[168, 26, 21]", true, id},
		{" 168 26 21 ", true, id},
		{"AAAA", false, wgproto.ClientID{}},
		{"000000", false, wgproto.ClientID{}},
		{"0,0,0", false, wgproto.ClientID{}},
		{"256,1,1", false, wgproto.ClientID{}},
		{"1,2", false, wgproto.ClientID{}},
		{"qBo", false, wgproto.ClientID{}},
		{"zzzzzz", false, wgproto.ClientID{}},
		{"q@oV", false, wgproto.ClientID{}},
		{"", false, wgproto.ClientID{}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := wgproto.ParseClientID(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && got != tt.value {
				t.Fatalf("got %v, want %v", got, tt.value)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(wgtest.Initiation(id, 1))
	f.Add(wgtest.Response(id, 1, 2))
	f.Add(wgtest.Cookie(id, 3))
	f.Add(wgtest.Transport(id, 4, 5, 32))
	f.Add(wgtest.Transport(id, 4, 5, 1392))
	f.Add([]byte{})
	f.Add([]byte{4, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		before := bytes.Clone(b)
		h, v := wgproto.Parse(b)
		if !bytes.Equal(before, b) {
			t.Fatal("Parse modified its input")
		}
		if v != wgproto.OK {
			return
		}
		// An accepted datagram obeys every rule.
		if h.Client.IsZero() {
			t.Fatal("accepted a zero client ID")
		}
		switch h.Type {
		case wgproto.TypeInitiation:
			if len(b) != 148 {
				t.Fatalf("initiation of %d bytes", len(b))
			}
		case wgproto.TypeResponse:
			if len(b) != 92 {
				t.Fatalf("response of %d bytes", len(b))
			}
		case wgproto.TypeCookie:
			if len(b) != 64 {
				t.Fatalf("cookie of %d bytes", len(b))
			}
		case wgproto.TypeTransport:
			if len(b) < 32 || len(b)%16 != 0 {
				t.Fatalf("transport of %d bytes", len(b))
			}
		default:
			t.Fatalf("accepted type %d", b[0])
		}
	})
}

func BenchmarkParse(b *testing.B) {
	d := wgtest.Transport(id, 1, 2, 208)
	b.ReportAllocs()
	for b.Loop() {
		wgproto.Parse(d)
	}
}
