package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/blake2s"
)

// The sessions measurement (issue 14): a burst of new client IDs against a
// running relay whose upstream echoes (udpbench echo). Each ID sends one
// handshake initiation, at --rate IDs a second, and counts as opened when
// its initiation comes back; nothing is sent again, so an initiation the
// relay dropped (over its admission budget, say) counts as not opened, as
// it would leave a real client waiting 5 s for its retry. It then reads
// the relay's resident memory (VmRSS from /proc/PID/status with --pid, or
// process_resident_memory_bytes from its /metrics with --metrics) and
// reports what the sessions added, per session.
//
// The relay must let that many sessions open: --max-sessions, an open-file
// limit and an upstream port range wide enough, an idle timeout longer than
// the run, and from one source --new-sessions-per-ip at least the rate
// (or --sources, to send from many loopback addresses).

type sessionsConfig struct {
	Target    string
	Count     int
	Rate      float64
	Sources   int
	FirstID   int
	Wait      time.Duration
	Settle    time.Duration
	PID       int
	Metrics   string
	PublicKey string
	SockBuf   int
}

type sessionsReport struct {
	Mode    string  `json:"mode"`
	Target  string  `json:"target"`
	Count   int     `json:"count"`
	Rate    float64 `json:"rate"`
	Sources int     `json:"sources"`
	// SendSeconds is how long sending took: Count/Rate unless the sender
	// fell behind.
	SendSeconds float64 `json:"send_seconds"`
	Opened      int     `json:"opened"`
	NotOpened   int     `json:"not_opened"`
	// Misdelivered counts replies that carried another ID than the one
	// their socket sent (a relay mixing up sessions).
	Misdelivered int `json:"misdelivered"`
	// LastOpenSeconds is when the last initiation came back, from the
	// first send.
	LastOpenSeconds float64 `json:"last_open_seconds"`
	// The relay's resident memory before the burst and after it (and
	// --settle), and what it grew by per opened session.
	RSSBeforeMB  float64 `json:"rss_before_mb,omitempty"`
	RSSAfterMB   float64 `json:"rss_after_mb,omitempty"`
	KBPerSession float64 `json:"kb_per_session,omitempty"`
	// With --metrics: the goroutines the relay gained, and what its
	// goroutine stacks (go_memstats_stack_inuse_bytes) grew by per opened
	// session, part of KBPerSession: a relay with a reader goroutine per
	// session has one more goroutine and its stack per session.
	GoroutinesAdded   int     `json:"goroutines_added,omitempty"`
	StackKBPerSession float64 `json:"stack_kb_per_session,omitempty"`
	RelayCPUSeconds   float64 `json:"relay_cpu_seconds,omitempty"`
	// Drops are the relay's dropped datagrams during the run, by reason
	// (with --metrics).
	Drops map[string]float64 `json:"drops,omitempty"`
}

func cmdSessions(ctx context.Context, args []string, stdout, stderr io.Writer) (any, error) {
	fs := newFlagSet("sessions", stderr)
	var c sessionsConfig
	fs.StringVar(&c.Target, "target", "", "relay address (host:port); its upstream must echo (udpbench echo)")
	fs.IntVar(&c.Count, "count", 10000, "client IDs to open, one initiation each")
	fs.Float64Var(&c.Rate, "rate", 5000, "new client IDs per second")
	fs.IntVar(&c.Sources, "sources", 1, "send from this many source addresses, 127.0.1.1 and up (IPv4 loopback targets only), each its share of the IDs")
	fs.IntVar(&c.FirstID, "first-id", 0, "number of the first client ID (IDs are distinct for distinct numbers), so that runs against one relay need not reuse IDs")
	fs.DurationVar(&c.Wait, "wait", 10*time.Second, "after the last send, how long to wait for initiations still to come back")
	fs.DurationVar(&c.Settle, "settle", 2*time.Second, "after the last reply, wait this long before reading the relay's memory")
	fs.IntVar(&c.PID, "pid", 0, "the relay's process ID, to read its VmRSS and CPU time from /proc")
	fs.StringVar(&c.Metrics, "metrics", "", "the relay's metrics URL (http://127.0.0.1:9090/metrics), to read its resident memory and drop counters")
	fs.StringVar(&c.PublicKey, "public-key", "", "make initiations' mac1 valid for this `BASE64` key (the relay's --upstream-public-key)")
	fs.IntVar(&c.SockBuf, "sockbuf", defaultSockBuf, "SO_RCVBUF/SO_SNDBUF bytes per socket")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	switch {
	case c.Target == "":
		return nil, fmt.Errorf("%w: --target is required", errUsage)
	case c.Count < 1 || c.FirstID < 0 || c.FirstID+c.Count >= 1<<24:
		return nil, fmt.Errorf("%w: --count >= 1 and --first-id >= 0, together under 2^24", errUsage)
	case c.Rate <= 0 || c.Sources < 1 || c.Sources > 65535 || c.Wait < 0 || c.Settle < 0:
		return nil, fmt.Errorf("%w: --rate > 0, --sources 1..65535, --wait and --settle >= 0", errUsage)
	}
	if err := checkAddr("--target", c.Target); err != nil {
		return nil, err
	}
	var key *[blake2s.Size]byte
	if c.PublicKey != "" {
		k, err := mac1Key(c.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("%w: --public-key: %w", errUsage, err)
		}
		key = &k
	}
	rep, err := openSessions(ctx, c, key)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "COUNT\tRATE\tSEND s\tOPENED\tNOT OPENED\tLAST OPEN s\tRSS BEFORE MB\tRSS AFTER MB\tKB/SESSION\tSTACK KB/SESSION\tGOROUTINES +\tRELAY CPU s")
	fmt.Fprintf(tw, "%d\t%.0f\t%.2f\t%d\t%d\t%.2f\t%.1f\t%.1f\t%.2f\t%.2f\t%d\t%.2f\n", rep.Count, rep.Rate, rep.SendSeconds, rep.Opened,
		rep.NotOpened, rep.LastOpenSeconds, rep.RSSBeforeMB, rep.RSSAfterMB, rep.KBPerSession, rep.StackKBPerSession,
		rep.GoroutinesAdded, rep.RelayCPUSeconds)
	tw.Flush()
	if len(rep.Drops) > 0 {
		fmt.Fprint(stdout, "relay drops during the run:")
		for _, r := range slices.Sorted(maps.Keys(rep.Drops)) {
			fmt.Fprintf(stdout, " %s=%.0f", r, rep.Drops[r])
		}
		fmt.Fprintln(stdout)
	}
	if rep.Misdelivered > 0 {
		fmt.Fprintf(stdout, "%d replies carried another client's ID\n", rep.Misdelivered)
	}
	return rep, err
}

// sessionSource is one sending socket and the IDs it opens: numbers
// first+k*step for k = 0, 1, ...
type sessionSource struct {
	conn   *net.UDPConn
	mc     *mmsgConn // sending
	rd     *mmsgConn // receiving, on the reader goroutine
	opened []atomic.Bool
}

// openSessions runs the measurement.
func openSessions(ctx context.Context, c sessionsConfig, key *[blake2s.Size]byte) (sessionsReport, error) {
	rep := sessionsReport{Mode: "sessions", Target: c.Target, Count: c.Count, Rate: c.Rate, Sources: c.Sources}
	raddr, err := net.ResolveUDPAddr("udp", c.Target)
	if err != nil {
		return rep, err
	}
	if c.Sources > 1 && (!raddr.IP.IsLoopback() || raddr.IP.To4() == nil) {
		return rep, fmt.Errorf("%w: --sources needs an IPv4 loopback target", errUsage)
	}
	probe := newRelayProbe(c.PID, c.Metrics)
	before, err := probe.read()
	if err != nil {
		return rep, err
	}

	srcs := make([]*sessionSource, c.Sources)
	for i := range srcs {
		var local *net.UDPAddr
		if c.Sources > 1 {
			n := 256 + 1 + i // 127.0.1.1 and up
			local = &net.UDPAddr{IP: net.IPv4(127, 0, byte(n>>8), byte(n))}
		}
		conn, err := net.DialUDP("udp", local, raddr)
		if err != nil {
			return rep, err
		}
		defer conn.Close()
		if _, _, err := setSockBuffers(conn, c.SockBuf); err != nil {
			return rep, err
		}
		s := &sessionSource{conn: conn, opened: make([]atomic.Bool, (c.Count+c.Sources-1-i)/c.Sources)}
		if s.mc, err = newMmsgConn(conn, 64); err != nil {
			return rep, err
		}
		if s.rd, err = newMmsgConn(conn, 64); err != nil {
			return rep, err
		}
		srcs[i] = s
	}

	// Readers: one per socket, until the sockets close.
	start := time.Now()
	var opened, misdelivered atomic.Int64
	var lastOpen atomic.Int64 // nanoseconds since start
	var readers sync.WaitGroup
	for i, s := range srcs {
		readers.Add(1)
		go func() {
			defer readers.Done()
			bufs := make([][]byte, 64)
			for j := range bufs {
				bufs[j] = make([]byte, 2048)
			}
			lens := make([]int, 64)
			for {
				n, err := s.rd.recv(bufs, lens)
				if err != nil {
					if isClosed(err) {
						return
					}
					continue // ECONNREFUSED after an ICMP error: the relay may come back
				}
				for j := range n {
					b := bufs[j][:max(lens[j], 0)]
					if len(b) != initiationSize || b[0] != msgInitiation {
						continue
					}
					k := int(binary.LittleEndian.Uint32(b[offSenderIndex:]))
					if k < 0 || k >= len(s.opened) || !isInitiationFrom(b, clientIDFor(c.FirstID+k*c.Sources+i)) {
						misdelivered.Add(1)
						continue
					}
					if !s.opened[k].Swap(true) {
						opened.Add(1)
						lastOpen.Store(int64(time.Since(start)))
					}
				}
			}
		}()
	}
	defer func() {
		for _, s := range srcs {
			s.conn.Close()
		}
		readers.Wait()
	}()

	// Send, paced: every tick, the IDs due by then. ID number g (0-based)
	// goes from source g mod Sources, as that source's k = g div Sources;
	// each source sends its share with sendmmsg, 64 at most at a time.
	bufs := make([][][]byte, len(srcs))
	queued := make([]int, len(srcs))
	for i := range bufs {
		bufs[i] = make([][]byte, 64)
		for j := range bufs[i] {
			bufs[i][j] = make([]byte, initiationSize)
		}
	}
	flush := func(i int) error {
		n := queued[i]
		if n == 0 {
			return nil
		}
		queued[i] = 0
		if _, err := srcs[i].mc.send(bufs[i][:n]); err != nil && isClosed(err) {
			return err
		}
		return nil // ECONNREFUSED after an ICMP error, ENOBUFS: those IDs count as not opened
	}
	var nonce [8]byte // this run's, so that a rerun's initiations are new too
	binary.LittleEndian.PutUint64(nonce[:], uint64(time.Now().UnixNano()))
	sent := 0
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for sent < c.Count && ctx.Err() == nil {
		due := min(c.Count, int(time.Since(start).Seconds()*c.Rate)+1)
		for ; sent < due; sent++ {
			i, k := sent%len(srcs), sent/len(srcs)
			b := bufs[i][queued[i]]
			putInitiation(b, clientIDFor(c.FirstID+sent), uint32(k))
			// Distinct bytes after the ID, as a real initiation's fresh
			// ephemeral key makes them: the relay takes an initiation
			// seen before under another ID for a replay.
			binary.LittleEndian.PutUint32(b[offSenderIndex+4:], uint32(c.FirstID+sent))
			copy(b[offSenderIndex+8:], nonce[:])
			if key != nil {
				putMAC1(b, key)
			}
			if queued[i]++; queued[i] == len(bufs[i]) {
				if err := flush(i); err != nil {
					return rep, err
				}
			}
		}
		for i := range srcs {
			if err := flush(i); err != nil {
				return rep, err
			}
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	rep.SendSeconds = time.Since(start).Seconds()

	// Wait for the stragglers, then let the relay settle.
	deadline := time.Now().Add(c.Wait)
	for opened.Load() < int64(c.Count) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if c.Settle > 0 {
		sleepCtx(ctx, c.Settle)
	}
	after, err := probe.read()

	rep.Opened = int(opened.Load())
	rep.NotOpened = c.Count - rep.Opened
	rep.Misdelivered = int(misdelivered.Load())
	rep.LastOpenSeconds = time.Duration(lastOpen.Load()).Seconds()
	if err == nil {
		rep.RSSBeforeMB, rep.RSSAfterMB = float64(before.rss)/(1<<20), float64(after.rss)/(1<<20)
		if rep.Opened > 0 && before.rss > 0 {
			rep.KBPerSession = float64(after.rss-before.rss) / 1024 / float64(rep.Opened)
		}
		rep.RelayCPUSeconds = (after.cpu - before.cpu).Seconds()
		if rep.Opened > 0 && before.goroutines > 0 {
			rep.GoroutinesAdded = after.goroutines - before.goroutines
			rep.StackKBPerSession = float64(after.stacks-before.stacks) / 1024 / float64(rep.Opened)
		}
		if before.drops != nil {
			rep.Drops = map[string]float64{}
			for r, v := range after.drops {
				if d := v - before.drops[r]; d > 0 {
					rep.Drops[r] = d
				}
			}
		}
	}
	return rep, err
}

// relayProbe reads what the measurement needs of the relay: from /proc
// with a PID, from its metrics with a URL, or nothing.
type relayProbe struct {
	pid     int
	metrics string
	client  *http.Client
}

// relaySample is one reading: resident bytes, CPU time (with a PID), and
// dropped datagrams by reason, goroutines and their stacks' bytes (with
// metrics).
type relaySample struct {
	rss        int64
	cpu        time.Duration
	drops      map[string]float64
	goroutines int
	stacks     int64
}

func newRelayProbe(pid int, metrics string) *relayProbe {
	return &relayProbe{pid: pid, metrics: metrics, client: &http.Client{Timeout: 10 * time.Second}}
}

func (p *relayProbe) read() (relaySample, error) {
	var s relaySample
	if p.pid > 0 {
		dir := "/proc/" + strconv.Itoa(p.pid)
		b, err := os.ReadFile(dir + "/status")
		if err != nil {
			return s, fmt.Errorf("relay memory: %w", err)
		}
		kb, found, err := parseStatusKB(b, "VmRSS")
		if err != nil || !found {
			return s, fmt.Errorf("relay memory: no VmRSS in %s/status (%v)", dir, err)
		}
		s.rss = int64(kb) << 10
		b, err = os.ReadFile(dir + "/stat")
		if err != nil {
			return s, fmt.Errorf("relay CPU: %w", err)
		}
		st, err := parseProcStat(b)
		if err != nil {
			return s, fmt.Errorf("relay CPU: %w", err)
		}
		s.cpu = ticksToDuration(st.utime + st.stime)
	}
	if p.metrics != "" {
		resp, err := p.client.Get(p.metrics)
		if err != nil {
			return s, fmt.Errorf("relay metrics: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return s, fmt.Errorf("relay metrics: %s", resp.Status)
		}
		m, err := parseRelayMetrics(resp.Body)
		if err != nil {
			return s, fmt.Errorf("relay metrics: %w", err)
		}
		s.drops, s.goroutines, s.stacks = m.drops, m.goroutines, m.stacks
		if p.pid == 0 {
			s.rss = m.rss
		}
	}
	return s, nil
}

// relayMetrics is what the measurement reads from a relay's metrics.
type relayMetrics struct {
	rss        int64              // process_resident_memory_bytes
	drops      map[string]float64 // udpfwd_dropped_datagrams_total by reason, summed over relays
	goroutines int                // go_goroutines
	stacks     int64              // go_memstats_stack_inuse_bytes
}

// parseRelayMetrics reads relayMetrics from a Prometheus text exposition.
func parseRelayMetrics(r io.Reader) (relayMetrics, error) {
	m := relayMetrics{drops: map[string]float64{}}
	found := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, perr := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if perr != nil {
			continue
		}
		switch {
		case name == "process_resident_memory_bytes":
			m.rss, found = int64(v), true
		case name == "go_goroutines":
			m.goroutines = int(v)
		case name == "go_memstats_stack_inuse_bytes":
			m.stacks = int64(v)
		case strings.HasPrefix(name, "udpfwd_dropped_datagrams_total{"):
			if reason := labelValue(name, "reason"); reason != "" {
				m.drops[reason] += v
			}
		}
	}
	if err := sc.Err(); err != nil {
		return relayMetrics{}, err
	}
	if !found {
		return relayMetrics{}, errors.New("no process_resident_memory_bytes")
	}
	return m, nil
}

// labelValue returns the value of label key in a series name such as
// `x{a="1",reason="queue_full"}`.
func labelValue(series, key string) string {
	i := strings.Index(series, key+`="`)
	if i < 0 {
		return ""
	}
	rest := series[i+len(key)+2:]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return rest[:j]
}
