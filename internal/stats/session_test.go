package stats

import (
	"net/netip"
	"testing"
	"time"
)

// What a session saves is encoded when asked for, and again after it
// changed.
func TestSessionSaved(t *testing.T) {
	s := NewSession(time.Now(), time.Now(), netip.MustParseAddrPort("192.0.2.1:1"))
	if b := s.Saved(); b != nil {
		t.Errorf("saved %q before anything was set", b)
	}
	type state struct {
		Addr string `json:"addr"`
	}
	s.SetSaved(state{"192.0.2.1:1"})
	if got, want := string(s.Saved()), `{"addr":"192.0.2.1:1"}`; got != want {
		t.Errorf("saved %s, want %s", got, want)
	}
	if got, want := string(s.Saved()), `{"addr":"192.0.2.1:1"}`; got != want {
		t.Errorf("asked again: saved %s, want %s", got, want)
	}
	s.SetSaved(state{"192.0.2.2:2"})
	if got, want := string(s.Saved()), `{"addr":"192.0.2.2:2"}`; got != want {
		t.Errorf("after a change: saved %s, want %s", got, want)
	}
	s.SetSaved(func() {}) // does not encode
	if b := s.Saved(); b != nil {
		t.Errorf("saved %q for a value that does not encode", b)
	}
}
