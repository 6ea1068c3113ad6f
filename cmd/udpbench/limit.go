package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// limitConfig is one `udpbench limit` measurement.
type limitConfig struct {
	Size     int
	Batch    int
	Duration time.Duration // per row
	CPU      int           // CPU to pin to; -1 picks the last one allowed
	SockBuf  int
}

// limitRow is the floor measured through one API.
type limitRow struct {
	API            string  `json:"api"`
	Size           int     `json:"size"`
	Batch          int     `json:"batch"`
	Datagrams      uint64  `json:"datagrams"`
	Seconds        float64 `json:"seconds"`
	PPS            float64 `json:"pps"`
	CPUSec         float64 `json:"cpu_s"`
	CPUUsPerDgram  float64 `json:"cpu_us_per_dgram"`
	WallUsPerDgram float64 `json:"wall_us_per_dgram"`
	CPUUtil        float64 `json:"cpu_util"`
	// ProcUsPerDgram counts every thread of the process, not just the
	// measuring one: with Go sockets, netpoller wake-ups on other threads
	// are part of the cost.
	ProcUsPerDgram float64 `json:"proc_cpu_us_per_dgram"`
	// OtherSec is CPU time the pinned CPU spent on anything but the
	// measuring thread (other processes, interrupts): load that disturbs
	// the figure.
	OtherSec float64 `json:"other_cpu_s"`
}

// pickCPU returns want if it is allowed, or the last allowed CPU if want < 0.
func pickCPU(want int) (int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0, fmt.Errorf("sched_getaffinity: %w", err)
	}
	if want >= 0 {
		if !set.IsSet(want) {
			return 0, fmt.Errorf("cpu %d: not in this process's affinity mask", want)
		}
		return want, nil
	}
	last := -1
	for i := 0; i < len(set)*64; i++ {
		if set.IsSet(i) {
			last = i
		}
	}
	if last < 0 {
		return 0, errors.New("empty affinity mask")
	}
	return last, nil
}

// measureLimit moves datagrams from one loopback socket to another on one
// thread pinned to cpu, for cfg.Duration: send a batch with sendmmsg, read
// it back with recvmmsg, repeat. On loopback the receive side's softirq
// work runs in the sender's context, so the thread's CPU time is the whole
// kernel cost of a datagram sent and received. api is "raw" (recvmmsg and
// sendmmsg called directly) or "xnet" (golang.org/x/net's ReadBatch and
// WriteBatch, what a Go relay would use).
func measureLimit(cfg limitConfig, cpu int, api string, batch int) (limitRow, error) {
	type out struct {
		row limitRow
		err error
	}
	ch := make(chan out, 1)
	go func() {
		// The thread is left locked: the runtime ends it with this
		// goroutine instead of reusing a thread with a changed affinity.
		runtime.LockOSThread()
		row, err := limitOnThread(cfg, cpu, api, batch)
		ch <- out{row, err}
	}()
	o := <-ch
	return o.row, o.err
}

func limitOnThread(cfg limitConfig, cpu int, api string, batch int) (limitRow, error) {
	row := limitRow{API: api, Size: cfg.Size, Batch: batch}
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return row, fmt.Errorf("sched_setaffinity: %w", err)
	}
	sbufs := make([][]byte, batch)
	rbufs := make([][]byte, batch)
	for i := range sbufs {
		sbufs[i] = make([]byte, cfg.Size)
		putTransportHeader(sbufs[i], clientIDFor(i), 1)
		rbufs[i] = make([]byte, cfg.Size+16)
	}
	var moveBatch func() error
	switch api {
	case "raw":
		tx, rx, err := rawSocketPair(cfg.SockBuf)
		if err != nil {
			return row, err
		}
		defer unix.Close(tx)
		defer unix.Close(rx)
		sb, rb := newMmsgBatch(batch), newMmsgBatch(batch)
		sb.point(sbufs)
		moveBatch = func() error { return rawMove(tx, rx, sb, rb, rbufs) }
	case "xnet":
		tx, rx, err := netSocketPair(cfg.SockBuf)
		if err != nil {
			return row, err
		}
		defer tx.Close()
		defer rx.Close()
		// A lost datagram would leave ReadBatch waiting: bound it.
		rx.SetReadDeadline(time.Now().Add(cfg.Duration + 5*time.Second))
		txb, rxb := newBatchConn(tx), newBatchConn(rx)
		sms := make([]ipv4.Message, batch)
		rms := make([]ipv4.Message, batch)
		for i := range sms {
			sms[i].Buffers = [][]byte{sbufs[i]}
			rms[i].Buffers = [][]byte{rbufs[i]}
		}
		moveBatch = func() error { return xnetMove(txb, rxb, sms, rms) }
	default:
		return row, fmt.Errorf("limit: unknown api %q", api)
	}

	coreName := fmt.Sprintf("cpu%d", cpu)
	core0, err := readMachineCPU(coreName)
	if err != nil {
		return row, err
	}
	var ru0, ru1 unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru0); err != nil {
		return row, fmt.Errorf("getrusage: %w", err)
	}
	proc0 := selfCPU()
	start := time.Now()
	end := start.Add(cfg.Duration)
	var moved uint64
	for time.Now().Before(end) {
		if err := moveBatch(); err != nil {
			return row, err
		}
		moved += uint64(batch)
	}
	wall := time.Since(start)
	procCPU := selfCPU() - proc0
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru1); err != nil {
		return row, fmt.Errorf("getrusage: %w", err)
	}
	core1, err := readMachineCPU(coreName)
	if err != nil {
		return row, err
	}
	cpuUsed := time.Duration(ru1.Utime.Nano() - ru0.Utime.Nano() + ru1.Stime.Nano() - ru0.Stime.Nano())
	row.OtherSec = max(0, (core1.Busy - core0.Busy - cpuUsed).Seconds())
	row.Datagrams = moved
	row.Seconds = wall.Seconds()
	row.PPS = float64(moved) / wall.Seconds()
	row.CPUSec = cpuUsed.Seconds()
	row.CPUUsPerDgram = float64(cpuUsed.Nanoseconds()) / 1e3 / float64(moved)
	row.WallUsPerDgram = float64(wall.Nanoseconds()) / 1e3 / float64(moved)
	row.CPUUtil = cpuUsed.Seconds() / wall.Seconds()
	row.ProcUsPerDgram = float64(procCPU.Nanoseconds()) / 1e3 / float64(moved)
	return row, nil
}

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

// rawMove sends the batch prepared in sb from tx and reads it back on rx.
// Loopback delivers inside sendmmsg, so the reads normally find the whole
// batch at once; they never block (MSG_DONTWAIT) and give up after a
// second, which on loopback with 4 MB buffers means a datagram was lost.
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
