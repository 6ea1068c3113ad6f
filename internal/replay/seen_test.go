package replay_test

import (
	"testing"

	"github.com/udpfwd/udpfwd/internal/replay"
	"github.com/udpfwd/udpfwd/internal/wgproto"
	"github.com/udpfwd/udpfwd/internal/wgtest"
)

// Seen finds an initiation recorded under any client ID, the zero one
// included, until its TTL is over; Replayed, which asks about one ID, does
// not count the same ID as a replay.
func TestSeen(t *testing.T) {
	tab := replay.New(replay.Entries, replay.TTL, t0)
	zero := wgproto.ClientID{}
	plain := tab.Key(wgtest.Initiation(zero, 1))
	withID := tab.Key(wgtest.Initiation(idA, 2))
	if tab.Seen(plain, t0) || tab.Seen(withID, t0) {
		t.Fatal("seen before any was recorded")
	}
	tab.Record(plain, zero, t0)
	tab.Record(withID, idA, t0)
	if !tab.Seen(plain, t0) || !tab.Seen(withID, t0.Add(replay.TTL-1e9)) {
		t.Fatal("a recorded initiation is not seen")
	}
	if tab.Replayed(plain, zero, t0) {
		t.Fatal("Replayed counts the same (zero) ID as a replay")
	}
	if !tab.Replayed(plain, idB, t0) || !tab.Replayed(withID, zero, t0) {
		t.Fatal("an initiation under the zero ID and then an ID, or the other way, is not a replay")
	}
	if tab.Seen(plain, t0.Add(replay.TTL)) {
		t.Fatal("seen past its TTL")
	}
}
