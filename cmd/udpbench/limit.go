package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// limitConfig is one `udpbench limit` measurement.
type limitConfig struct {
	Size     int
	Batch    int
	Duration time.Duration // per row, shared by the CPUs measured
	// CPU is the CPU to pin the measuring thread to; -1 measures on every
	// CPU the process may use, in turns, and keeps the quietest.
	CPU     int
	SockBuf int
}

// limitAPIs are the rows `udpbench limit` measures by default.
const limitAPIs = "raw,gso,xnet,raw1"

// limitAPIsHelp describes the rows for --api.
const limitAPIsHelp = "rows to measure: raw (sendmmsg/recvmmsg called directly: the floor), gso (raw, the batch sent as UDP GSO messages), " +
	"xnet (Go sockets with x/net WriteBatch/ReadBatch), raw1 (raw, one datagram per system call)"

// limitSlice is how long one measured slice lasts. Slices alternate over
// the CPUs measured, so a disturbance (another process's burst, a storm of
// disk interrupts) spoils a few slices on one CPU, not the figure: the
// median slice counts.
const limitSlice = 100 * time.Millisecond

// limitRow is the floor measured through one API.
type limitRow struct {
	API   string `json:"api"`
	Size  int    `json:"size"`
	Batch int    `json:"batch"`
	// Messages is how many messages carry one batch to the kernel: Batch,
	// or fewer when GSO packs several datagrams into one.
	Messages int `json:"messages_per_batch"`
	// CPU is the CPU the figures below come from: the one whose median
	// slice was cheapest.
	CPU int `json:"cpu"`
	// Slices is how many measured slices ran on CPU.
	Slices    int     `json:"slices"`
	Datagrams uint64  `json:"datagrams"`
	Seconds   float64 `json:"seconds"`
	PPS       float64 `json:"pps"`
	CPUSec    float64 `json:"cpu_s"`
	// CPUUsPerDgram is the measuring thread's CPU time per datagram sent
	// and received: the median of CPU's slices. Min and max are the
	// cheapest and dearest slice.
	CPUUsPerDgram  float64 `json:"cpu_us_per_dgram"`
	CPUUsMin       float64 `json:"cpu_us_per_dgram_min"`
	CPUUsMax       float64 `json:"cpu_us_per_dgram_max"`
	WallUsPerDgram float64 `json:"wall_us_per_dgram"`
	CPUUtil        float64 `json:"cpu_util"`
	// ProcUsPerDgram counts every thread of the process, not just the
	// measuring one: with Go sockets, netpoller wake-ups on other threads
	// are part of the cost.
	ProcUsPerDgram float64 `json:"proc_cpu_us_per_dgram"`
	// OtherSec is CPU time the pinned CPU spent on anything but the
	// measuring thread (other processes, interrupts outside its time):
	// load that disturbs the figure. StealSec is time the hypervisor
	// reports it gave that CPU's turn to someone else.
	OtherSec float64 `json:"other_cpu_s"`
	StealSec float64 `json:"steal_s"`
	// PerCPU is the median per CPU measured.
	PerCPU []limitCPU `json:"per_cpu"`
}

// limitCPU is one CPU's median in a row.
type limitCPU struct {
	CPU           int     `json:"cpu"`
	Slices        int     `json:"slices"`
	CPUUsPerDgram float64 `json:"cpu_us_per_dgram"`
	OtherSec      float64 `json:"other_cpu_s"`
}

// limitReport is the JSON last line of `udpbench limit`.
type limitReport struct {
	Mode string `json:"mode"`
	// CPU is the CPU the floor comes from.
	CPU             int        `json:"cpu"`
	CPUs            []int      `json:"cpus"`
	Rows            []limitRow `json:"rows"`
	FloorUsPerDgram float64    `json:"floor_us_per_dgram"`
	Warnings        []string   `json:"warnings,omitempty"`
}

// runLimit measures the rows apis names (comma-separated) and prints them.
func runLimit(ctx context.Context, cfg limitConfig, apis string, stdout, stderr io.Writer) (limitReport, error) {
	cpus, err := limitCPUs(cfg.CPU)
	if err != nil {
		return limitReport{}, fmt.Errorf("%w: %w", errUsage, err)
	}
	rep := limitReport{Mode: "limit", CPUs: cpus, CPU: -1}
	type job struct {
		api   string
		batch int
	}
	var jobs []job
	for api := range strings.SplitSeq(apis, ",") {
		switch api = strings.TrimSpace(api); api {
		case "raw", "gso", "xnet":
			jobs = append(jobs, job{api, cfg.Batch})
		case "raw1":
			jobs = append(jobs, job{"raw", 1})
		default:
			return rep, fmt.Errorf("%w: --api %q: want raw, gso, xnet or raw1", errUsage, api)
		}
	}
	for _, j := range jobs {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		fmt.Fprintf(stderr, "udpbench limit: %s, batch %d, %v on cpus %v ...\n", j.api, j.batch, cfg.Duration, cpus)
		row, err := measureLimit(cfg, cfg.CPU, j.api, j.batch)
		if err != nil {
			return rep, err
		}
		rep.Rows = append(rep.Rows, row)
		rep.Warnings = append(rep.Warnings, limitWarnings(row)...)
		if j.api == "raw" && j.batch == cfg.Batch && rep.FloorUsPerDgram == 0 {
			rep.FloorUsPerDgram, rep.CPU = row.CPUUsPerDgram, row.CPU
		}
	}
	printLimit(stdout, cfg, rep)
	return rep, nil
}

// printLimit writes the table and says what was measured.
func printLimit(w io.Writer, cfg limitConfig, rep limitReport) {
	fmt.Fprintf(w, "udpbench limit: %d-byte datagrams through a connected UDP socket pair on 127.0.0.1, one thread pinned to one CPU at a time (cpus %v, %v slices taking turns)\n",
		cfg.Size, rep.CPUs, limitSlice)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "API\tBATCH\tMSGS\tCPU\tDATAGRAMS/S\tCPU µs/DGRAM\tmin\tmax\tPROCESS CPU µs/DGRAM\tWALL µs/DGRAM\tCPU UTIL\tPER CPU\t")
	for _, r := range rep.Rows {
		var per []string
		for _, c := range r.PerCPU {
			per = append(per, fmt.Sprintf("cpu%d %.3f", c.CPU, c.CPUUsPerDgram))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.2f\t%s\t\n", r.API, r.Batch, r.Messages, r.CPU, r.PPS,
			r.CPUUsPerDgram, r.CPUUsMin, r.CPUUsMax, r.ProcUsPerDgram, r.WallUsPerDgram, r.CPUUtil, strings.Join(per, ", "))
	}
	tw.Flush()
	fmt.Fprintln(w, "Each row: the thread sends a batch with one sendmmsg and reads it back with recvmmsg; loopback delivers inside the send, so the thread's CPU time is the kernel's whole path, send and receive.")
	fmt.Fprintln(w, "CPU µs/DGRAM = that thread's utime+stime per datagram, the median slice on the CPU where it was lowest (min, max: the cheapest and dearest slice there); PROCESS counts all threads; MSGS = messages per batch.")
	fmt.Fprintln(w, "raw: blocking sockets outside Go's netpoller, one message per datagram: the floor `compare` divides by. gso: the same with the batch sent as UDP GSO messages (the kernel's cost when a sender packs runs, as udpfwd does).")
	fmt.Fprintln(w, "xnet: Go sockets with x/net WriteBatch/ReadBatch (what a Go relay pays, netpoller included); raw with batch 1: one datagram per system call.")
	if rep.FloorUsPerDgram > 0 {
		fmt.Fprintf(w, "floor: %.3f µs CPU per datagram (raw, batch %d, cpu %d)\n", rep.FloorUsPerDgram, cfg.Batch, rep.CPU)
	}
	for _, s := range rep.Warnings {
		fmt.Fprintf(w, "WARNING: %s\n", s)
	}
}

// limitWarnings flags a row whose figure the machine disturbed.
func limitWarnings(r limitRow) []string {
	var ws []string
	name := fmt.Sprintf("%s/%d", r.API, r.Batch)
	if r.OtherSec > 0.05*r.Seconds {
		ws = append(ws, fmt.Sprintf("%s: cpu %d spent %.2f s of %.2f s on other work: another process shared the core, rerun on a quiet machine", name, r.CPU, r.OtherSec, r.Seconds))
	}
	if r.StealSec > 0.02*r.Seconds {
		ws = append(ws, fmt.Sprintf("%s: the hypervisor took %.2f s of %.2f s from cpu %d: the host is busy, rerun later", name, r.StealSec, r.Seconds, r.CPU))
	}
	if r.CPUUsMin > 0 && r.CPUUsMax > 1.5*r.CPUUsMin {
		ws = append(ws, fmt.Sprintf("%s: slices on cpu %d ranged from %.3f to %.3f µs per datagram: the machine was busy; the median is shown", name, r.CPU, r.CPUUsMin, r.CPUUsMax))
	}
	for _, c := range r.PerCPU {
		if c.CPU != r.CPU && c.CPUUsPerDgram > 1.2*r.CPUUsPerDgram {
			ws = append(ws, fmt.Sprintf("%s: cpu %d measured %.2f× cpu %d: interrupts or other work on it (this figure counts interrupt time the thread was charged); cpu %d's is shown",
				name, c.CPU, c.CPUUsPerDgram/r.CPUUsPerDgram, r.CPU, r.CPU))
		}
	}
	return ws
}

// pickCPU returns want if it is allowed, or the last allowed CPU if want < 0.
func pickCPU(want int) (int, error) {
	cpus, err := allowedCPUs()
	if err != nil {
		return 0, err
	}
	if want < 0 {
		return cpus[len(cpus)-1], nil
	}
	if !slices.Contains(cpus, want) {
		return 0, fmt.Errorf("cpu %d: not in this process's affinity mask", want)
	}
	return want, nil
}

// limitCPUs returns the CPUs to measure on: want alone, or every allowed
// CPU if want < 0.
func limitCPUs(want int) ([]int, error) {
	if want >= 0 {
		c, err := pickCPU(want)
		if err != nil {
			return nil, err
		}
		return []int{c}, nil
	}
	return allowedCPUs()
}

// allowedCPUs lists the CPUs in this process's affinity mask.
func allowedCPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	var cpus []int
	for i := 0; i < len(set)*64; i++ {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	if len(cpus) == 0 {
		return nil, errors.New("empty affinity mask")
	}
	return cpus, nil
}

// measureLimit moves datagrams from one loopback socket to another on one
// thread, for cfg.Duration: send a batch with sendmmsg, read it back with
// recvmmsg, repeat. The thread is pinned to cpu, or (cpu < 0) to each
// allowed CPU in turn, slice by slice. On loopback the receive side's
// softirq work runs in the sender's context, so the thread's CPU time is
// the whole kernel cost of a datagram sent and received. api is "raw"
// (recvmmsg and sendmmsg called directly), "gso" (raw, with the batch sent
// as UDP GSO messages) or "xnet" (golang.org/x/net's ReadBatch and
// WriteBatch, what a Go relay would use).
func measureLimit(cfg limitConfig, cpu int, api string, batch int) (limitRow, error) {
	cpus, err := limitCPUs(cpu)
	if err != nil {
		return limitRow{}, err
	}
	type out struct {
		row limitRow
		err error
	}
	ch := make(chan out, 1)
	go func() {
		// The thread is left locked: the runtime ends it with this
		// goroutine instead of reusing a thread with a changed affinity.
		runtime.LockOSThread()
		row, err := limitOnThread(cfg, cpus, api, batch)
		ch <- out{row, err}
	}()
	o := <-ch
	return o.row, o.err
}

// limitMover moves one batch through the socket pair.
type limitMover struct {
	move     func() error
	close    func()
	messages int // per batch
}

// newMover opens the socket pair of api and prepares a batch of datagrams.
func newMover(cfg limitConfig, api string, batch int) (limitMover, error) {
	sbufs := make([][]byte, batch)
	rbufs := make([][]byte, batch)
	for i := range sbufs {
		sbufs[i] = make([]byte, cfg.Size)
		putTransportHeader(sbufs[i], clientIDFor(i), 1)
		rbufs[i] = make([]byte, cfg.Size+16)
	}
	switch api {
	case "raw", "gso":
		tx, rx, err := rawSocketPair(cfg.SockBuf)
		if err != nil {
			return limitMover{}, err
		}
		closeBoth := func() { unix.Close(tx); unix.Close(rx) }
		rb := newMmsgBatch(batch)
		var sb *mmsgBatch
		if api == "gso" {
			if sb, err = gsoBatch(tx, sbufs, cfg.Size); err != nil {
				closeBoth()
				return limitMover{}, err
			}
		} else {
			sb = newMmsgBatch(batch)
			sb.point(sbufs)
		}
		return limitMover{move: func() error { return rawMove(tx, rx, sb, rb, rbufs) }, close: closeBoth, messages: len(sb.hdrs)}, nil
	case "xnet":
		tx, rx, err := netSocketPair(cfg.SockBuf)
		if err != nil {
			return limitMover{}, err
		}
		// A lost datagram would leave ReadBatch waiting: bound it.
		rx.SetReadDeadline(time.Now().Add(cfg.Duration + 5*time.Second))
		txb, rxb := newBatchConn(tx), newBatchConn(rx)
		sms := make([]ipv4.Message, batch)
		rms := make([]ipv4.Message, batch)
		for i := range sms {
			sms[i].Buffers = [][]byte{sbufs[i]}
			rms[i].Buffers = [][]byte{rbufs[i]}
		}
		return limitMover{move: func() error { return xnetMove(txb, rxb, sms, rms) }, close: func() { tx.Close(); rx.Close() }, messages: batch}, nil
	}
	return limitMover{}, fmt.Errorf("limit: unknown api %q", api)
}

// limitSample is one measured slice.
type limitSample struct {
	cpu                             int
	moved                           uint64
	wall, thread, proc, other, stol time.Duration
}

func (s limitSample) usPerDgram() float64 {
	return float64(s.thread.Nanoseconds()) / 1e3 / float64(s.moved)
}

func limitOnThread(cfg limitConfig, cpus []int, api string, batch int) (limitRow, error) {
	row := limitRow{API: api, Size: cfg.Size, Batch: batch}
	m, err := newMover(cfg, api, batch)
	if err != nil {
		return row, err
	}
	defer m.close()
	row.Messages = m.messages
	perCPU := max(1, int(cfg.Duration/(limitSlice*time.Duration(len(cpus)))))
	slice := cfg.Duration / time.Duration(perCPU*len(cpus))
	var samples []limitSample
	for range perCPU {
		for _, cpu := range cpus {
			s, err := limitSampleOn(m, cpu, slice, batch)
			if err != nil {
				return row, err
			}
			samples = append(samples, s)
		}
	}
	return summarizeLimit(row, samples), nil
}

// limitSampleOn pins the thread to cpu, warms up, and measures one slice.
func limitSampleOn(m limitMover, cpu int, slice time.Duration, batch int) (limitSample, error) {
	s := limitSample{cpu: cpu}
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return s, fmt.Errorf("sched_setaffinity: %w", err)
	}
	for range 8 { // after a move to another CPU: caches, not the kernel path
		if err := m.move(); err != nil {
			return s, err
		}
	}
	coreName := fmt.Sprintf("cpu%d", cpu)
	core0, err := readMachineCPU(coreName)
	if err != nil {
		return s, err
	}
	var ru0, ru1 unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru0); err != nil {
		return s, fmt.Errorf("getrusage: %w", err)
	}
	proc0 := selfCPU()
	start := time.Now()
	end := start.Add(slice)
	for time.Now().Before(end) {
		if err := m.move(); err != nil {
			return s, err
		}
		s.moved += uint64(batch)
	}
	s.wall = time.Since(start)
	s.proc = selfCPU() - proc0
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru1); err != nil {
		return s, fmt.Errorf("getrusage: %w", err)
	}
	core1, err := readMachineCPU(coreName)
	if err != nil {
		return s, err
	}
	s.thread = time.Duration(ru1.Utime.Nano() - ru0.Utime.Nano() + ru1.Stime.Nano() - ru0.Stime.Nano())
	s.other = max(0, core1.Busy-core0.Busy-s.thread)
	s.stol = core1.Steal - core0.Steal
	return s, nil
}

// summarizeLimit fills row from the samples: per CPU the median slice, and
// the totals of the CPU whose median is lowest.
func summarizeLimit(row limitRow, samples []limitSample) limitRow {
	byCPU := map[int][]limitSample{}
	var order []int
	for _, s := range samples {
		if _, ok := byCPU[s.cpu]; !ok {
			order = append(order, s.cpu)
		}
		byCPU[s.cpu] = append(byCPU[s.cpu], s)
	}
	best := -1
	medians := map[int]float64{}
	for _, cpu := range order {
		ss := byCPU[cpu]
		us := make([]float64, len(ss))
		var other time.Duration
		for i, s := range ss {
			us[i] = s.usPerDgram()
			other += s.other
		}
		medians[cpu] = median(us)
		row.PerCPU = append(row.PerCPU, limitCPU{CPU: cpu, Slices: len(ss), CPUUsPerDgram: medians[cpu], OtherSec: other.Seconds()})
		if best < 0 || medians[cpu] < medians[best] {
			best = cpu
		}
	}
	row.CPU = best
	var moved uint64
	var wall, thread, proc, other, stol time.Duration
	row.CPUUsMin, row.CPUUsMax = 0, 0
	for i, s := range byCPU[best] {
		moved += s.moved
		wall += s.wall
		thread += s.thread
		proc += s.proc
		other += s.other
		stol += s.stol
		us := s.usPerDgram()
		if i == 0 || us < row.CPUUsMin {
			row.CPUUsMin = us
		}
		row.CPUUsMax = max(row.CPUUsMax, us)
	}
	row.Slices = len(byCPU[best])
	row.Datagrams = moved
	row.Seconds = wall.Seconds()
	row.PPS = float64(moved) / wall.Seconds()
	row.CPUSec = thread.Seconds()
	row.CPUUsPerDgram = medians[best]
	row.WallUsPerDgram = float64(wall.Nanoseconds()) / 1e3 / float64(moved)
	row.CPUUtil = thread.Seconds() / wall.Seconds()
	row.ProcUsPerDgram = float64(proc.Nanoseconds()) / 1e3 / float64(moved)
	row.OtherSec = other.Seconds()
	row.StealSec = stol.Seconds()
	return row
}

// median returns the middle value (the mean of the middle two).
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// gsoBatch prepares bufs (all size bytes) as sendmmsg messages of up to
// maxGSOSegments datagrams each, for a socket with UDP_SEGMENT set to
// size: the kernel cuts each message into the same datagrams after one
// trip through its stack.
func gsoBatch(tx int, bufs [][]byte, size int) (*mmsgBatch, error) {
	if err := unix.SetsockoptInt(tx, unix.SOL_UDP, unix.UDP_SEGMENT, size); err != nil {
		return nil, fmt.Errorf("limit gso: this kernel refuses UDP_SEGMENT: %w", err)
	}
	per := min(maxGSOSegments, maxGSOBytes/size)
	msgs := (len(bufs) + per - 1) / per
	b := &mmsgBatch{hdrs: make([]unix.Mmsghdr, msgs), iovs: make([]unix.Iovec, len(bufs))}
	for i := range bufs {
		b.iovs[i].Base = &bufs[i][0]
		b.iovs[i].SetLen(len(bufs[i]))
	}
	for m := range msgs {
		first := m * per
		n := min(per, len(bufs)-first)
		b.hdrs[m].Hdr.Iov = &b.iovs[first]
		b.hdrs[m].Hdr.SetIovlen(n)
	}
	return b, nil
}

// UDP GSO limits: at most 64 segments per message on older kernels, and a
// message must fit one IP datagram with its headers.
const (
	maxGSOSegments = 64
	maxGSOBytes    = 65535 - 20 - 8 - 64 // IPv4 and UDP headers, and slack
)

// rawSocketPair returns two blocking UDP sockets on 127.0.0.1, tx connected
// to rx, that Go's netpoller knows nothing about: no epoll registration,
// so nothing but the kernel's UDP path is measured.
func rawSocketPair(sockBuf int) (tx, rx int, err error) {
	open := func() (int, error) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("limit socket: %w", err)
		}
		for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
			if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], sockBuf) != nil {
				if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], sockBuf); err != nil {
					unix.Close(fd)
					return -1, fmt.Errorf("limit socket buffers: %w", err)
				}
			}
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("limit bind: %w", err)
		}
		return fd, nil
	}
	if rx, err = open(); err != nil {
		return -1, -1, err
	}
	if tx, err = open(); err != nil {
		unix.Close(rx)
		return -1, -1, err
	}
	sa, err := unix.Getsockname(rx)
	if err == nil {
		err = unix.Connect(tx, sa)
	}
	if err != nil {
		unix.Close(rx)
		unix.Close(tx)
		return -1, -1, fmt.Errorf("limit connect: %w", err)
	}
	return tx, rx, nil
}

// rawMove sends the messages prepared in sb from tx and reads the batch
// back on rx into rbufs. Loopback delivers inside sendmmsg, so the reads
// normally find the whole batch at once; they never block (MSG_DONTWAIT)
// and give up after a second, which on loopback with 4 MB buffers means a
// datagram was lost.
func rawMove(tx, rx int, sb, rb *mmsgBatch, rbufs [][]byte) error {
	for sent := 0; sent < len(sb.hdrs); {
		n, e := sb.call(unix.SYS_SENDMMSG, uintptr(tx), sent, len(sb.hdrs)-sent, 0)
		if e != 0 {
			return fmt.Errorf("limit sendmmsg: %w", e)
		}
		sent += n
	}
	var giveUp time.Time
	for got := 0; got < len(rbufs); {
		n, e := rb.call(unix.SYS_RECVMMSG, uintptr(rx), 0, rb.point(rbufs[got:]), unix.MSG_DONTWAIT)
		switch {
		case e == unix.EAGAIN || e == unix.EINTR:
			if giveUp.IsZero() {
				giveUp = time.Now().Add(time.Second)
			} else if time.Now().After(giveUp) {
				return fmt.Errorf("limit: a datagram was lost on loopback (%d of a batch of %d arrived)", got, len(rbufs))
			}
		case e != 0:
			return fmt.Errorf("limit recvmmsg: %w", e)
		default:
			got += n
		}
	}
	return nil
}

// netSocketPair returns two Go UDP sockets on 127.0.0.1, tx connected to rx.
func netSocketPair(sockBuf int) (tx, rx *net.UDPConn, err error) {
	rx, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, nil, fmt.Errorf("limit: %w", err)
	}
	tx, err = net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, rx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		rx.Close()
		return nil, nil, fmt.Errorf("limit: %w", err)
	}
	for _, c := range []*net.UDPConn{rx, tx} {
		if _, _, err := setSockBuffers(c, sockBuf); err != nil {
			rx.Close()
			tx.Close()
			return nil, nil, fmt.Errorf("limit: %w", err)
		}
	}
	return tx, rx, nil
}

// xnetMove sends sms with WriteBatch and reads as many back with ReadBatch.
func xnetMove(tx, rx batchConn, sms, rms []ipv4.Message) error {
	if _, err := writeBatchAll(tx, sms); err != nil {
		return fmt.Errorf("limit send: %w", err)
	}
	for got := 0; got < len(rms); {
		n, err := rx.ReadBatch(rms[:len(rms)-got], 0)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("limit: a datagram was lost on loopback (%d of a batch of %d arrived)", got, len(rms))
			}
			return fmt.Errorf("limit recv: %w", err)
		}
		got += n
	}
	return nil
}
