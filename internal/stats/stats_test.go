package stats_test

import (
	"sync"
	"testing"

	"github.com/udpfwd/udpfwd/internal/stats"
)

// TestShardsAddUp: what workers count in their shards, concurrently, reads
// back from the relay's counters as one sum, with the relay's own counts.
func TestShardsAddUp(t *testing.T) {
	var c stats.Counters
	c.Move(stats.FromClient, 1, 10)
	shards := []*stats.Counters{c.Shard(), c.Shard(), c.Shard()}
	var wg sync.WaitGroup
	for i, s := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				s.Move(stats.FromClient, 2, 100)
				s.Drop(stats.NoPeer, 1)
				s.Count(stats.SessionOpened)
			}
			s.SetLive(i + 1)
		}()
	}
	wg.Wait()
	for _, tt := range []struct {
		name      string
		got, want uint64
	}{
		{"datagrams", c.Datagrams(stats.FromClient), 1 + 3*2000},
		{"bytes", c.Bytes(stats.FromClient), 10 + 3*100000},
		{"drops", c.Dropped(stats.NoPeer), 3000},
		{"total drops", c.TotalDropped(), 3000},
		{"events", c.Events(stats.SessionOpened), 3000},
		{"live", uint64(c.Live()), 1 + 2 + 3},
		{"a shard alone", shards[0].Datagrams(stats.FromClient), 2000},
	} {
		if tt.got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, tt.got, tt.want)
		}
	}
}
