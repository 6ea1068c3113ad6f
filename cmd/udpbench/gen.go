package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/sys/unix"
)

// monoBase anchors nowNS: time.Since reads the monotonic clock, so stamps
// and RTTs are immune to wall-clock steps.
var monoBase = time.Now()

// nowNS is monotonic nanoseconds since the program started.
func nowNS() int64 { return int64(time.Since(monoBase)) }

// selfCPU is the CPU time (user+system) this process has used so far.
func selfCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// genConfig is one generator load.
type genConfig struct {
	Clients     int           // UDP sockets, one client ID each
	Window      int           // datagrams in flight per client (throughput mode)
	Size        int           // transport datagram length
	Batch       int           // max datagrams per recvmmsg/sendmmsg
	Duration    time.Duration // measured window
	Warmup      time.Duration // run before the measured window, not counted
	Drain       time.Duration // max wait for outstanding replies after the window
	LossTimeout time.Duration // a reply later than this is counted lost (ping-pong) or its slot refilled (throughput)
	SockBuf     int           // SO_RCVBUF/SO_SNDBUF request
}

// maxClients bounds --clients: each client is a socket (a file descriptor)
// and a goroutine, and client IDs have 24 bits.
const maxClients = 4096

// validate checks a configuration before any socket is opened.
func (c genConfig) validate() error {
	if c.Clients < 1 || c.Clients > maxClients {
		return fmt.Errorf("clients %d: want 1..%d", c.Clients, maxClients)
	}
	if c.Window < 1 || c.Window > 1<<16 {
		return fmt.Errorf("window %d: want 1..65536", c.Window)
	}
	if err := validateSize(c.Size); err != nil {
		return err
	}
	if c.Batch < 1 || c.Batch > 1024 {
		return fmt.Errorf("batch %d: want 1..1024", c.Batch)
	}
	if c.Duration <= 0 {
		return fmt.Errorf("duration %v: want > 0", c.Duration)
	}
	if c.Warmup < 0 || c.Drain < 0 {
		return errors.New("warmup and drain must not be negative")
	}
	if c.LossTimeout <= 0 {
		return fmt.Errorf("loss timeout %v: want > 0", c.LossTimeout)
	}
	if c.SockBuf < 0 {
		return fmt.Errorf("socket buffer %d: want >= 0", c.SockBuf)
	}
	return nil
}

// client is one generator socket with its own client ID, connected to the
// target so the kernel drops datagrams from anyone else.
type client struct {
	idx   int
	id    clientID
	conn  *net.UDPConn
	mm    *mmsgConn
	rbufs [][]byte
	lens  []int
	// index is what the client's transports carry as receiver index in a
	// plain run (clientSet.setPlain): the sender index of the response
	// to its latest handshake, or of its own initiation if it was echoed.
	index uint32
	hs    uint32 // handshakes made (plain runs: each has its own sender index)
}

// clientSet is the generator's clients, kept across runs so a relay sees the
// same sessions throughout. Each run gets a new epoch (stored in the
// receiver-index field) so stray replies from an earlier run are ignored.
type clientSet struct {
	target  *net.UDPAddr
	clients []*client
	epoch   uint32
	// mac1, if set, makes each client's handshake initiation carry a mac1
	// valid for it (a relay with --upstream-public-key checks it).
	mac1 *[blake2s.Size]byte
	// plain clients send client ID zero (setPlain); they hand-shake again
	// before every run after the first, within hsTimeout.
	plain     bool
	hsTimeout time.Duration
	runs      int
}

// setPlain makes every client a plain WireGuard client: client ID zero, so
// that a relay tracking plain clients (udpfwd --zero-id track) finds their
// sessions by address and by the index the upstream assigned, which their
// transports carry (in the place the run's epoch has otherwise). Every run
// after the first starts with a new handshake, a rekey from the same
// address, whose new index also tells the run's replies from an earlier
// one's.
func (cs *clientSet) setPlain(hsTimeout time.Duration) {
	cs.plain, cs.hsTimeout = true, hsTimeout
	for _, c := range cs.clients {
		c.id = clientID{}
	}
}

// openClients opens n connected sockets to target able to receive
// datagrams up to maxSize bytes in batches of batch.
func openClients(target *net.UDPAddr, n, batch, sockBuf, maxSize int) (*clientSet, error) {
	cs := &clientSet{target: target}
	local := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	if target.IP.To4() == nil {
		local = &net.UDPAddr{IP: net.IPv6loopback}
	}
	for i := 0; i < n; i++ {
		c, err := openClient(i, local, target, batch, sockBuf, maxSize)
		if err != nil {
			cs.close()
			return nil, err
		}
		cs.clients = append(cs.clients, c)
	}
	return cs, nil
}

func openClient(i int, local, target *net.UDPAddr, batch, sockBuf, maxSize int) (*client, error) {
	conn, err := net.DialUDP("udp", local, target)
	if err != nil {
		return nil, fmt.Errorf("client %d: %w", i, err)
	}
	if sockBuf > 0 {
		if _, _, err := setSockBuffers(conn, sockBuf); err != nil {
			conn.Close()
			return nil, fmt.Errorf("client %d: %w", i, err)
		}
	}
	mm, err := newMmsgConn(conn, batch)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("client %d: %w", i, err)
	}
	c := &client{idx: i, id: clientIDFor(i), conn: conn, mm: mm, lens: make([]int, batch)}
	// One spare 16 bytes so a longer reply than expected is seen as such.
	rlen := max(maxSize, initiationSize) + 16
	for range batch {
		c.rbufs = append(c.rbufs, make([]byte, rlen))
	}
	return c, nil
}

// close closes every socket.
func (cs *clientSet) close() {
	for _, c := range cs.clients {
		c.conn.Close()
	}
}

// handshake sends each client's handshake-initiation shaped datagram until
// it comes back (a relay opens the client's session on it), all clients at
// once, bounded by timeout.
func (cs *clientSet) handshake(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	errs := make([]error, len(cs.clients))
	var wg sync.WaitGroup
	for i, c := range cs.clients {
		wg.Go(func() { errs[i] = c.handshake(ctx, deadline, cs.mac1, cs.plain) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// handshake is one client's part of clientSet.handshake: it retries every
// 100 ms until the echo of its initiation, or a response to it, arrives or
// deadline passes. A plain client's initiation has a sender index of its
// own for each handshake (one a relay has not seen: every initiation of a
// plain client is a new one), and it keeps the index its transports carry.
func (c *client) handshake(ctx context.Context, deadline time.Time, mac1 *[blake2s.Size]byte, plain bool) error {
	out := make([]byte, initiationSize)
	sender := uint32(c.idx)
	if plain {
		c.hs++
		sender = c.hs<<13 | uint32(c.idx) // idx <= maxClients = 4096
	}
	putInitiation(out, c.id, sender)
	if mac1 != nil {
		putMAC1(out, mac1)
	}
	in := c.rbufs[0]
	defer c.conn.SetReadDeadline(time.Time{})
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if _, err := c.conn.Write(out); err != nil && !errors.Is(err, unix.ECONNREFUSED) {
			return fmt.Errorf("client %d (%s) handshake: %w", c.idx, c.id, err)
		}
		retry := time.Now().Add(100 * time.Millisecond)
		if retry.After(deadline) {
			retry = deadline
		}
		c.conn.SetReadDeadline(retry)
		for {
			n, err := c.conn.Read(in)
			if err != nil {
				if errors.Is(err, unix.ECONNREFUSED) {
					// Nobody listens yet; wait out the retry interval.
					time.Sleep(time.Until(retry))
					break
				}
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				return fmt.Errorf("client %d (%s) handshake: %w", c.idx, c.id, err)
			}
			if isInitiationFrom(in[:n], c.id) && binary.LittleEndian.Uint32(in[offSenderIndex:]) == sender {
				c.index = sender
				return nil
			}
			if index, ok := responseTo(in[:n], c.id, sender); ok {
				c.index = index
				return nil
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("client %d (%s): handshake-shaped datagram not echoed by %v within the timeout", c.idx, c.id, c.conn.RemoteAddr())
}

// Phases of a run, published by the coordinator and read by every client
// once per batch.
const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseDrain
)

// runHooks are called by the coordinator right after the measured window
// opens and right after it closes (compare samples the relay there).
type runHooks struct {
	start, end func()
}

// clientStats is one client's counters for one run. Counts with an m
// prefix cover the measured window only.
type clientStats struct {
	sent       uint64 // datagrams sent in the whole run
	answered   uint64 // distinct datagrams answered in the whole run
	dup        uint64 // replies for a sequence number already answered
	bad        uint64 // replies of the wrong shape or length, or an unsent sequence number
	foreign    uint64 // WireGuard-shaped replies carrying another client's ID: misdelivered by the relay
	stale      uint64 // replies from an earlier run (other epoch) or late echoes of handshake retries
	late       uint64 // answered after being written off (throughput) or after the loss timeout (ping-pong)
	writtenOff uint64 // throughput: window slots refilled because a reply was overdue
	stalls     uint64 // throughput: reads that waited the whole loss timeout
	refused    uint64 // ECONNREFUSED seen (nobody listening at the target)
	lostTotal  uint64 // sent in the whole run, never answered

	mStartSeq, mEndSeq uint64 // throughput: sequence numbers sent in the window
	mSent              uint64
	mLost              uint64
	mRx, mRxBytes      uint64 // replies received in the window
	hist               histogram
	err                error
}

// runResult is the outcome of one generator run (either mode).
type runResult struct {
	Mode       string         `json:"mode"`
	Target     string         `json:"target"`
	Clients    int            `json:"clients"`
	Window     int            `json:"window"`
	Size       int            `json:"size"`
	Seconds    float64        `json:"seconds"`
	Sent       uint64         `json:"sent"`
	Answered   uint64         `json:"answered"`
	Lost       uint64         `json:"lost"`
	LossPct    float64        `json:"loss_pct"`
	PPS        float64        `json:"pps"`
	Mbps       float64        `json:"mbps"`
	RTT        latencySummary `json:"rtt"`
	SentTotal  uint64         `json:"sent_total"`
	LostTotal  uint64         `json:"lost_total"`
	Dup        uint64         `json:"dup"`
	Bad        uint64         `json:"bad"`
	Foreign    uint64         `json:"foreign"`
	Stale      uint64         `json:"stale"`
	Late       uint64         `json:"late"`
	WrittenOff uint64         `json:"written_off"`
	Stalls     uint64         `json:"stalls"`
	Refused    uint64         `json:"refused"`
	GenCPUSec  float64        `json:"gen_cpu_s"`
	GenCores   float64        `json:"gen_cores"`
	GenUsPerRT float64        `json:"gen_us_per_rt"`
	// MachineCores is how many cores the whole machine kept busy during
	// the window (/proc/stat), StealCores how many the hypervisor took:
	// with the generator's, the target's and the relay's share subtracted,
	// what is left is load that disturbed the measurement.
	MachineCores float64 `json:"machine_cores"`
	StealCores   float64 `json:"steal_cores"`
}

// run drives one run of mode ("throughput" or "pingpong") over cs.
func (cs *clientSet) run(ctx context.Context, mode string, cfg genConfig, hooks runHooks) (runResult, error) {
	cs.epoch++
	if cs.plain && cs.runs > 0 {
		if err := cs.handshake(ctx, cs.hsTimeout); err != nil {
			return runResult{Mode: mode, Target: cs.target.String()}, err
		}
	}
	cs.runs++
	var phase atomic.Int32
	stats := make([]clientStats, len(cs.clients))
	var wg sync.WaitGroup
	for i, c := range cs.clients {
		epoch := cs.epoch
		if cs.plain {
			epoch = c.index
		}
		wg.Go(func() {
			if mode == "pingpong" {
				c.pingpong(cfg, epoch, &phase, &stats[i])
			} else {
				c.throughput(cfg, epoch, &phase, &stats[i])
			}
		})
	}
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	ok := wait(cfg.Warmup)
	phase.Store(phaseMeasure)
	t0, cpu0 := time.Now(), selfCPU()
	m0, merr0 := readMachineCPU("cpu")
	if hooks.start != nil {
		hooks.start()
	}
	ok = ok && wait(cfg.Duration)
	phase.Store(phaseDrain)
	elapsed, cpu := time.Since(t0), selfCPU()-cpu0
	m1, merr1 := readMachineCPU("cpu")
	if hooks.end != nil {
		hooks.end()
	}
	wg.Wait()

	res := runResult{Mode: mode, Target: cs.target.String(), Clients: len(cs.clients), Window: cfg.Window,
		Size: cfg.Size, Seconds: elapsed.Seconds()}
	if mode == "pingpong" {
		res.Window = 1
	}
	var hist histogram
	var mRxBytes uint64
	var errs []error
	for i := range stats {
		s := &stats[i]
		errs = append(errs, s.err)
		res.Sent += s.mSent
		res.Lost += s.mLost
		res.Answered += s.mRx
		mRxBytes += s.mRxBytes
		res.SentTotal += s.sent
		res.LostTotal += s.lostTotal
		res.Dup += s.dup
		res.Bad += s.bad
		res.Foreign += s.foreign
		res.Stale += s.stale
		res.Late += s.late
		res.WrittenOff += s.writtenOff
		res.Stalls += s.stalls
		res.Refused += s.refused
		hist.merge(&s.hist)
	}
	if res.Sent > 0 {
		res.LossPct = 100 * float64(res.Lost) / float64(res.Sent)
	}
	res.PPS = float64(res.Answered) / elapsed.Seconds()
	res.Mbps = float64(mRxBytes) * 8 / elapsed.Seconds() / 1e6
	res.RTT = hist.summary()
	res.GenCPUSec = cpu.Seconds()
	res.GenCores = cpu.Seconds() / elapsed.Seconds()
	if res.Answered > 0 {
		res.GenUsPerRT = float64(cpu.Microseconds()) / float64(res.Answered)
	}
	if merr0 == nil && merr1 == nil {
		res.MachineCores = (m1.Busy - m0.Busy).Seconds() / elapsed.Seconds()
		res.StealCores = (m1.Steal - m0.Steal).Seconds() / elapsed.Seconds()
	}
	if !ok {
		return res, ctx.Err()
	}
	return res, errors.Join(errs...)
}

// throughput keeps cfg.Window datagrams in flight: every reply (or overdue
// datagram) is replaced by a new one. Replies are matched by sequence
// number, so loss is counted exactly after the drain.
func (c *client) throughput(cfg genConfig, epoch uint32, phase *atomic.Int32, st *clientStats) {
	sbufs := make([][]byte, cfg.Batch)
	for i := range sbufs {
		sbufs[i] = make([]byte, cfg.Size)
		putTransportHeader(sbufs[i], c.id, epoch)
	}
	// sendTimes[seq%ring] is when seq was sent. A datagram still unanswered
	// when ring newer ones have been sent is overdue even if its slot time
	// was overwritten.
	ring := 1
	for ring < 16*(cfg.Window+cfg.Batch) {
		ring <<= 1
	}
	sendTimes := make([]int64, ring)
	var answered seqSet
	var next, lowest uint64 // next sequence number; lowest not yet answered nor written off
	inflight := 0
	lossNS := cfg.LossTimeout.Nanoseconds()

	send := func(k int) error {
		for k > 0 {
			m := min(k, len(sbufs))
			now := nowNS()
			for i := 0; i < m; i++ {
				setTransportSeq(sbufs[i], next+uint64(i), now)
				sendTimes[(next+uint64(i))&uint64(ring-1)] = now
			}
			n, err := c.mm.send(sbufs[:m])
			next += uint64(n)
			inflight += n
			k -= n
			if err != nil {
				if errors.Is(err, unix.ECONNREFUSED) {
					st.refused++
					return nil // retried on the next top-up
				}
				return err
			}
		}
		return nil
	}

	startSet, endSet := false, false
	var drainUntil int64
	fail := func(err error) { st.err = fmt.Errorf("client %d (%s): %w", c.idx, c.id, err) }
	if err := send(cfg.Window); err != nil {
		fail(err)
		return
	}
	for {
		ph := phase.Load()
		now := nowNS()
		if ph >= phaseMeasure && !startSet {
			st.mStartSeq, startSet = next, true
		}
		if ph == phaseDrain && !endSet {
			st.mEndSeq, endSet = next, true
			drainUntil = now + cfg.Drain.Nanoseconds()
		}
		if ph == phaseDrain && (st.answered == next || now >= drainUntil) {
			break
		}
		deadline := now + lossNS
		if ph == phaseDrain {
			deadline = drainUntil
		}
		c.conn.SetReadDeadline(monoBase.Add(time.Duration(deadline)))
		n, err := c.mm.recv(c.rbufs, c.lens)
		now = nowNS()
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if ph != phaseDrain {
				st.stalls++
			}
		case errors.Is(err, unix.ECONNREFUSED):
			st.refused++
		default:
			fail(err)
			return
		}
		measuring := ph == phaseMeasure
		for i := 0; i < n; i++ {
			l := c.lens[i]
			if l < 0 {
				st.bad++
				continue
			}
			b := c.rbufs[i][:l]
			if isHandshakeFrom(b, c.id) {
				st.stale++ // a late echo of a handshake retry
				continue
			}
			if isForeign(b, c.id) {
				st.foreign++
				continue
			}
			r, ok := parseTransport(b, cfg.Size)
			switch {
			case !ok || r.seq >= next:
				st.bad++
				continue
			case r.epoch != epoch:
				st.stale++
				continue
			case !answered.add(r.seq):
				st.dup++
				continue
			}
			st.answered++
			if r.seq < lowest {
				st.late++ // its slot was already refilled
			} else {
				inflight--
			}
			if measuring {
				st.mRx++
				st.mRxBytes += uint64(l)
				st.hist.record(now - r.stamp)
			}
		}
		// Move past answered datagrams; write off overdue ones so the
		// window stays full under loss (they still count if they arrive).
		for lowest < next {
			if answered.has(lowest) {
				lowest++
				continue
			}
			if next-lowest < uint64(ring) && now-sendTimes[lowest&uint64(ring-1)] < lossNS {
				break
			}
			st.writtenOff++
			inflight--
			lowest++
		}
		if ph != phaseDrain && inflight < cfg.Window {
			if err := send(cfg.Window - inflight); err != nil {
				fail(err)
				return
			}
		}
	}
	c.conn.SetReadDeadline(time.Time{})
	st.sent = next
	st.lostTotal = answered.missing(0, next)
	if !startSet {
		st.mStartSeq = next
	}
	if !endSet {
		st.mEndSeq = next
	}
	st.mSent = st.mEndSeq - st.mStartSeq
	st.mLost = answered.missing(st.mStartSeq, st.mEndSeq)
}

// pingpong keeps one datagram in flight: send, wait for its reply (at most
// cfg.LossTimeout), repeat. RTTs of datagrams sent in the window are
// recorded.
func (c *client) pingpong(cfg genConfig, epoch uint32, phase *atomic.Int32, st *clientStats) {
	out := make([]byte, cfg.Size)
	putTransportHeader(out, c.id, epoch)
	in := c.rbufs[0]
	defer c.conn.SetReadDeadline(time.Time{})
	var seq uint64
	for {
		ph := phase.Load()
		if ph == phaseDrain {
			break
		}
		measuring := ph == phaseMeasure
		sentAt := nowNS()
		setTransportSeq(out, seq, sentAt)
		if _, err := c.conn.Write(out); err != nil {
			if !errors.Is(err, unix.ECONNREFUSED) {
				st.err = fmt.Errorf("client %d (%s): %w", c.idx, c.id, err)
				return
			}
			st.refused++
		}
		st.sent++
		if measuring {
			st.mSent++
		}
		c.conn.SetReadDeadline(monoBase.Add(time.Duration(sentAt + cfg.LossTimeout.Nanoseconds())))
		answered := false
		for !answered {
			n, err := c.conn.Read(in)
			now := nowNS()
			if err != nil {
				if errors.Is(err, unix.ECONNREFUSED) {
					st.refused++
					continue
				}
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				st.err = fmt.Errorf("client %d (%s): %w", c.idx, c.id, err)
				return
			}
			r, ok := parseTransport(in[:n], cfg.Size)
			switch {
			case isHandshakeFrom(in[:n], c.id):
				st.stale++ // a late echo of a handshake retry
			case isForeign(in[:n], c.id):
				st.foreign++
			case !ok || r.seq > seq:
				st.bad++
			case r.epoch != epoch:
				st.stale++
			case r.seq < seq:
				st.late++
			default:
				answered = true
				st.answered++
				if measuring {
					st.mRx++
					st.mRxBytes += uint64(n)
					st.hist.record(now - sentAt)
				}
			}
		}
		if !answered {
			st.lostTotal++
			if measuring {
				st.mLost++
			}
		}
		seq++
	}
}
