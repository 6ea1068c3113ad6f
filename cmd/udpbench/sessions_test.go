package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// sessionsTarget stands in for a relay whose upstream echoes: it sends
// back every initiation whose client ID keep accepts, and remembers the
// distinct initiations it saw (bytes after the ID).
func sessionsTarget(t *testing.T, keep func(id [3]byte) bool) (addr string, distinct func() int) {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, _, err := setSockBuffers(c, defaultSockBuf); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			seen[string(buf[4:n])] = true
			if keep([3]byte(buf[1:4])) {
				c.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	return c.LocalAddr().String(), func() int {
		c.Close()
		<-done
		return len(seen)
	}
}

func TestSessions(t *testing.T) {
	for _, tt := range []struct {
		name    string
		sources string
		keep    func(id [3]byte) bool
		opened  int
	}{
		{"all come back", "1", func([3]byte) bool { return true }, 300},
		{"all come back, from three sources", "3", func([3]byte) bool { return true }, 300},
		{"none comes back", "1", func([3]byte) bool { return false }, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			target, distinct := sessionsTarget(t, tt.keep)
			code, out, rep := runCLI(t, "sessions", "--target", target, "--count", "300", "--rate", "20000",
				"--sources", tt.sources, "--wait", "2s", "--settle", "0s")
			if code != 0 {
				t.Fatalf("exit %d\n%s", code, out)
			}
			if got := int(rep["opened"].(float64)); got != tt.opened {
				t.Errorf("%d opened, want %d\n%s", got, tt.opened, out)
			}
			if got := int(rep["not_opened"].(float64)); got != 300-tt.opened {
				t.Errorf("%d not opened, want %d", got, 300-tt.opened)
			}
			if got := rep["misdelivered"].(float64); got != 0 {
				t.Errorf("%v misdelivered", got)
			}
			// A relay takes the same bytes under two IDs for a replay.
			if n := distinct(); n != 300 {
				t.Errorf("%d distinct initiations of 300", n)
			}
		})
	}
}

// An initiation that comes back under another ID than its socket sent is
// counted as misdelivered, not opened.
func TestSessionsMisdelivered(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			buf[1] ^= 0xff
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	code, out, rep := runCLI(t, "sessions", "--target", c.LocalAddr().String(), "--count", "50", "--rate", "20000",
		"--wait", "300ms", "--settle", "0s")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	if rep["opened"].(float64) != 0 || rep["misdelivered"].(float64) != 50 {
		t.Errorf("opened %v, misdelivered %v: want 0 and 50", rep["opened"], rep["misdelivered"])
	}
}

// The relay's memory, goroutines and drops are read from its metrics.
func TestSessionsMetrics(t *testing.T) {
	const exposition = `# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 2.4576e+07
go_goroutines 42
go_memstats_stack_inuse_bytes 1.048576e+06
udpfwd_dropped_datagrams_total{reason="admission_overload",relay="a"} 7
udpfwd_dropped_datagrams_total{reason="admission_overload",relay="b"} 3
udpfwd_dropped_datagrams_total{reason="queue_full",relay="a"} 0
`
	m, err := parseRelayMetrics(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	if m.rss != 24576000 || m.goroutines != 42 || m.stacks != 1<<20 {
		t.Errorf("rss %d, goroutines %d, stacks %d", m.rss, m.goroutines, m.stacks)
	}
	if m.drops["admission_overload"] != 10 || m.drops["queue_full"] != 0 {
		t.Errorf("drops %v", m.drops)
	}
	if _, err := parseRelayMetrics(strings.NewReader("go_goroutines 1\n")); err == nil {
		t.Error("metrics without resident memory were accepted")
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(exposition))
	}))
	defer srv.Close()
	s, err := newRelayProbe(0, srv.URL).read()
	if err != nil {
		t.Fatal(err)
	}
	if s.rss != 24576000 || s.goroutines != 42 || s.drops["admission_overload"] != 10 {
		t.Errorf("probe read %+v", s)
	}
}
