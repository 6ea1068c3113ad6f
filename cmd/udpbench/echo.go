package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
)

// echoServer sends every datagram back to its sender, reading and writing
// in batches (recvmmsg/sendmmsg through x/net's PacketConn). It stands in for
// the WARP server behind a relay: replies are the request bytes unchanged,
// so the client ID in bytes 1..3 comes back as WARP's servers echo it.
//
// With wg set it answers a handshake-initiation shaped datagram as a
// WireGuard responder does, with a handshake-response shaped one: bytes
// 1..3 echoed, a fresh sender index of its own, and the initiation's sender
// index as receiver index. A relay that finds plain clients by the index
// the upstream assigned (udpfwd --zero-id track) learns it from there, and
// the client then sends it in its transports.
type echoServer struct {
	conn  *net.UDPConn
	bc    batchConn
	batch int
	wg    bool

	received  atomic.Uint64
	sent      atomic.Uint64
	sendDrops atomic.Uint64
	answered  atomic.Uint64 // initiations answered with a response (wg)
	done      chan struct{}
	err       error
}

// startEcho listens on addr (host:port; port 0 picks one) with socket
// buffers of bufBytes and starts serving in a goroutine.
func startEcho(addr string, bufBytes, batch int) (*echoServer, error) {
	return startEchoServer(addr, bufBytes, batch, false)
}

// startEchoServer is startEcho, answering initiations with responses if wg
// is set.
func startEchoServer(addr string, bufBytes, batch int, wg bool) (*echoServer, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("echo: %w", err)
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("echo: %w", err)
	}
	if _, _, err := setSockBuffers(c, bufBytes); err != nil {
		c.Close()
		return nil, fmt.Errorf("echo: %w", err)
	}
	e := &echoServer{conn: c, bc: newBatchConn(c), batch: batch, wg: wg, done: make(chan struct{})}
	go e.serve()
	return e, nil
}

// addr is the address the server listens on.
func (e *echoServer) addr() *net.UDPAddr { return e.conn.LocalAddr().(*net.UDPAddr) }

// close stops the server and waits for its goroutine. It returns the error
// that ended serving early, if any.
func (e *echoServer) close() error {
	e.conn.Close()
	<-e.done
	return e.err
}

func (e *echoServer) serve() {
	defer close(e.done)
	rms := make([]ipv4.Message, e.batch)
	wms := make([]ipv4.Message, e.batch)
	resp := make([][]byte, e.batch) // the responses of wg mode, one per slot
	for i := range rms {
		rms[i].Buffers = [][]byte{make([]byte, 65536)}
		wms[i].Buffers = [][]byte{nil}
		resp[i] = make([]byte, responseSize)
	}
	var index uint32 // the responder's sender indexes, fresh for each response
	answered := uint64(0)
	for {
		n, err := e.bc.ReadBatch(rms, 0)
		if err != nil {
			if !isClosed(err) {
				e.err = fmt.Errorf("echo read: %w", err)
			}
			return
		}
		answered = 0
		for i := 0; i < n; i++ {
			b := rms[i].Buffers[0][:rms[i].N]
			if e.wg && len(b) == initiationSize && b[0] == msgInitiation {
				index++
				putResponse(resp[i], clientID(b[1:4]), index, binary.LittleEndian.Uint32(b[offSenderIndex:]))
				b = resp[i]
				answered++
			}
			wms[i].Buffers[0] = b
			wms[i].Addr = rms[i].Addr
		}
		e.answered.Add(answered)
		e.received.Add(uint64(n))
		dropped, err := writeBatchAll(e.bc, wms[:n])
		if err != nil && isClosed(err) {
			return
		}
		e.sendDrops.Add(uint64(dropped))
		e.sent.Add(uint64(n - dropped))
	}
}

// echoReport is the JSON last line of `udpbench echo`.
type echoReport struct {
	Mode      string  `json:"mode"`
	Addr      string  `json:"addr"`
	Seconds   float64 `json:"seconds"`
	Received  uint64  `json:"received"`
	Sent      uint64  `json:"sent"`
	SendDrops uint64  `json:"send_drops"`
	CPUSec    float64 `json:"cpu_s"`
	// Answered counts the initiations answered with a response (--wg).
	Answered uint64 `json:"answered_initiations,omitempty"`
}

// report summarises the server's counters over elapsed.
func (e *echoServer) report(elapsed, cpu time.Duration) echoReport {
	return echoReport{
		Mode:      "echo",
		Addr:      e.addr().String(),
		Seconds:   elapsed.Seconds(),
		Received:  e.received.Load(),
		Sent:      e.sent.Load(),
		SendDrops: e.sendDrops.Load(),
		CPUSec:    cpu.Seconds(),
		Answered:  e.answered.Load(),
	}
}
