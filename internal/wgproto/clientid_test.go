package wgproto_test

import (
	"encoding"
	"encoding/json"
	"testing"

	"github.com/udpfwd/udpfwd/internal/wgproto"
)

var (
	_ encoding.TextMarshaler   = wgproto.ClientID{}
	_ encoding.TextUnmarshaler = (*wgproto.ClientID)(nil)
)

// A client ID is written as its hex form and read back as it was, the zero
// ID included; other text is refused.
func TestClientIDText(t *testing.T) {
	for _, c := range []wgproto.ClientID{id, {}, {0xff, 0xff, 0xff}, {0, 0, 1}} {
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if want := `"` + c.String() + `"`; string(b) != want {
			t.Fatalf("json of %v = %s, want %s", c, b, want)
		}
		var got wgproto.ClientID
		if err := json.Unmarshal(b, &got); err != nil || got != c {
			t.Fatalf("read back %s = %v, %v; want %v", b, got, err, c)
		}
	}
	for _, bad := range []string{"", "a81a1", "a81a150", "qBoV", "0xa81a15", "a81a1g", "168,26,21", "A81A15 "} {
		var got wgproto.ClientID
		if err := got.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("UnmarshalText(%q) = %v, want an error", bad, got)
		}
	}
	// Upper-case hex is hex.
	var got wgproto.ClientID
	if err := got.UnmarshalText([]byte("A81A15")); err != nil || got != id {
		t.Errorf(`UnmarshalText("A81A15") = %v, %v; want %v`, got, err, id)
	}
}
