package state_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/state"
)

func TestSaveLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	f := state.New()
	f.Saved = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	f.Relays["warp"] = []state.Session{{
		ID: "6f0c5c1e-3f53-4b0a-9f4e-0c0f6b1b9a11", Client: "a81a15", ClientAddr: "203.0.113.7:41000",
		UpstreamLocal: "0.0.0.0:53123", Upstream: "162.159.192.1:2408", UpstreamConfig: "engage.cloudflareclient.com:2408",
		Created: f.Saved, Roam: json.RawMessage(`{"indexes":[1,2]}`),
	}}
	if err := state.Save(path, f); err != nil {
		t.Fatal(err)
	}
	got, err := state.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(f)
	b, _ := json.Marshal(got)
	if string(a) != string(b) {
		t.Fatalf("round trip:\n%s\n%s", a, b)
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("directory holds %d files, want only the state file", len(entries))
	}
}

func TestLoadMissingIsEmpty(t *testing.T) {
	f, err := state.Load(filepath.Join(t.TempDir(), "none.json"))
	if err != nil || len(f.Relays) != 0 {
		t.Fatalf("Load of a missing file = %v, %v; want an empty state", f, err)
	}
}

func TestCorruptAndForeign(t *testing.T) {
	for _, tt := range []struct{ name, content string }{
		{"garbage", "\x00\x01not json"},
		{"truncated", `{"format":"udpfwd-state","version":1,"relays":{`},
		{"foreign json", `{"hello":"world"}`},
		{"other version", `{"format":"udpfwd-state","version":99,"relays":{}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			os.WriteFile(path, []byte(tt.content), 0o600)
			_, err := state.Load(path)
			var ce *state.CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("Load = %v, want a *CorruptError", err)
			}
			aside, err := state.Quarantine(path, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(aside); string(b) != tt.content {
				t.Fatal("the bad file was not kept as it was")
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("the bad file is still in place")
			}
		})
	}
}
