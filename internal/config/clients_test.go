package config

import (
	"strings"
	"testing"

	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// The keys of plain clients and framing: defaults, every form of the stamp,
// the rules that tie them together, and the effective config reading back.
func TestClientKeys(t *testing.T) {
	relay := "relays:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:1\n"
	stamp := wgproto.ClientID{168, 26, 21}
	tests := []struct {
		name    string
		extra   string
		zero    ZeroID
		stamp   wgproto.ClientID
		types   MessageTypes
		problem string
		warning string
	}{
		{name: "defaults", zero: ZeroIDDrop, types: MessageTypesStrict},
		{name: "track", extra: "    zero_id: track\n", zero: ZeroIDTrack, types: MessageTypesStrict},
		{name: "stamp base64", extra: "    zero_id: track\n    stamp_client_id: qBoV\n", zero: ZeroIDTrack, stamp: stamp, types: MessageTypesStrict},
		{name: "stamp hex", extra: "    zero_id: track\n    stamp_client_id: a81a15\n", zero: ZeroIDTrack, stamp: stamp, types: MessageTypesStrict},
		{name: "stamp triple", extra: "    zero_id: track\n    stamp_client_id: 168,26,21\n", zero: ZeroIDTrack, stamp: stamp, types: MessageTypesStrict},
		{name: "stamp as sing-box writes reserved", extra: "    zero_id: track\n    stamp_client_id: [168, 26, 21]\n", zero: ZeroIDTrack, stamp: stamp, types: MessageTypesStrict},
		{name: "stamp without track", extra: "    stamp_client_id: qBoV\n", problem: "t:5: relays[0].stamp_client_id: set without zero_id: track"},
		{name: "stamp a bad list", extra: "    zero_id: track\n    stamp_client_id: [168, 26]\n", problem: "t:6: relays[0].stamp_client_id: client ID \"168,26\""},
		{name: "any", extra: "    message_types: any\n", zero: ZeroIDDrop, types: MessageTypesAny},
		{name: "bad zero_id", extra: "    zero_id: yes\n", problem: `t:5: relays[0].zero_id: "yes": want drop or track`},
		{name: "bad message_types", extra: "    message_types: wg\n", problem: `t:5: relays[0].message_types: "wg": want strict or any`},
		{name: "track with an allow-list", extra: "    zero_id: track\n    security: {allow_clients: [qBoV]}\n",
			zero: ZeroIDTrack, types: MessageTypesStrict, warning: "t:5: relays[0].zero_id: track with security.allow_clients"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Decode([]byte(relay+tt.extra), "t")
			var warnings []*Error
			if err == nil {
				warnings, err = f.Validate()
			}
			if tt.problem != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.problem) {
					t.Fatalf("err = %v, want %q", err, tt.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r := &f.Relays[0]
			if r.ZeroID != tt.zero || r.StampClientID != tt.stamp || r.MessageTypes != tt.types {
				t.Fatalf("zero_id %q stamp %v message_types %q; want %q %v %q", r.ZeroID, r.StampClientID, r.MessageTypes, tt.zero, tt.stamp, tt.types)
			}
			switch {
			case tt.warning == "" && len(warnings) > 0:
				t.Errorf("warnings %v, want none", warnings)
			case tt.warning != "" && (len(warnings) == 0 || !strings.HasPrefix(warnings[0].Error(), tt.warning)):
				t.Errorf("warnings %v, want %q", warnings, tt.warning)
			}
			out, err := f.Effective()
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(out, "effective")
			if err != nil {
				t.Fatalf("the effective config does not parse: %v\n%s", err, out)
			}
			if !back.Relays[0].Equal(r) {
				t.Errorf("the effective config reads back as %+v, want %+v", back.Relays[0], *r)
			}
		})
	}
}

// A forward relay takes none of them: it reads no WireGuard header.
func TestClientKeysRefusedInForwardMode(t *testing.T) {
	for _, key := range []string{"zero_id: track", "stamp_client_id: qBoV", "message_types: any"} {
		_, err := Parse([]byte("relays:\n  - name: a\n    mode: forward\n    listen: 127.0.0.1:1\n    upstream: 192.0.2.1:1\n    "+key+"\n"), "t")
		name, _, _ := strings.Cut(key, ":")
		if err == nil || !strings.Contains(err.Error(), "relays[0]."+name+": not used in forward mode") {
			t.Errorf("%s in a forward relay: %v", key, err)
		}
	}
}
