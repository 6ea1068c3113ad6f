package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/blake2s"
)

// The flood: hostile input for a relay's admission path, from one source
// (issue 11). Kinds:
//
//   - initiation: ONE handshake initiation (random content, mac1 valid for
//     --public-key if given), sent again and again under a random client
//     ID each time: a captured initiation replayed under every ID, which
//     mac1 cannot tell apart because WARP clients compute it with the ID
//     zeroed.
//   - fresh: a new initiation every time (random content, valid mac1 if
//     --public-key): what a replay table cannot stop, only a budget.
//   - junk: random 148-byte datagrams of type 1 and random IDs, whose mac1
//     is valid for no key.
//
// It sends as fast as one core can (or at --rate), with sendmmsg, for
// --duration, and reports what it sent.
const (
	floodInitiation = "initiation"
	floodFresh      = "fresh"
	floodJunk       = "junk"

	mac1Offset = 116 // initiation: mac1 (16 bytes) covers bytes 0..115
)

type floodConfig struct {
	Target    string
	Kind      string
	PublicKey string
	Duration  time.Duration
	Rate      float64 // datagrams a second; 0 is as fast as possible
	Batch     int
	SockBuf   int
	// Sources is how many source addresses to send from, round robin:
	// 127.0.1.1, 127.0.1.2, ... (an IPv4 loopback target only), as an
	// attacker with many addresses would.
	Sources int
}

type floodReport struct {
	Mode       string  `json:"mode"`
	Kind       string  `json:"kind"`
	Target     string  `json:"target"`
	Seconds    float64 `json:"seconds"`
	Sent       uint64  `json:"sent"`
	SendErrors uint64  `json:"send_errors"`
	PerSecond  float64 `json:"per_second"`
	CPUSec     float64 `json:"cpu_sec"`
}

func cmdFlood(ctx context.Context, args []string, stdout, stderr io.Writer) (any, error) {
	fs := newFlagSet("flood", stderr)
	var c floodConfig
	fs.StringVar(&c.Target, "target", "", "relay address to flood (host:port)")
	fs.StringVar(&c.Kind, "kind", floodInitiation, "what to send: initiation (one initiation under random client IDs), fresh (a new initiation each time) or junk")
	fs.StringVar(&c.PublicKey, "public-key", "", "make initiations' mac1 valid for this `BASE64` key (the relay's --upstream-public-key)")
	fs.DurationVar(&c.Duration, "duration", 5*time.Second, "how long to flood")
	fs.Float64Var(&c.Rate, "rate", 0, "datagrams per second; 0 is as fast as possible")
	fs.IntVar(&c.Batch, "batch", 64, "datagrams per sendmmsg")
	fs.IntVar(&c.SockBuf, "sockbuf", defaultSockBuf, "SO_SNDBUF bytes")
	fs.IntVar(&c.Sources, "sources", 1, "send from this many source addresses, 127.0.1.1 and up (IPv4 loopback targets only)")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	switch {
	case c.Target == "":
		return nil, fmt.Errorf("%w: --target is required", errUsage)
	case c.Kind != floodInitiation && c.Kind != floodFresh && c.Kind != floodJunk:
		return nil, fmt.Errorf("%w: --kind %q: want initiation, fresh or junk", errUsage, c.Kind)
	case c.Duration <= 0 || c.Rate < 0 || c.Batch < 1 || c.Batch > 1024 || c.Sources < 1 || c.Sources > 65535:
		return nil, fmt.Errorf("%w: --duration > 0, --rate >= 0, --batch 1..1024 and --sources 1..65535", errUsage)
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
	rep, err := flood(ctx, c, key)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tSECONDS\tSENT\tPER SECOND\tSEND ERRORS\tCPU s")
	fmt.Fprintf(tw, "%s\t%.2f\t%d\t%.0f\t%d\t%.2f\n", rep.Kind, rep.Seconds, rep.Sent, rep.PerSecond, rep.SendErrors, rep.CPUSec)
	tw.Flush()
	return rep, err
}

// flood sends until the duration is over or ctx ends.
func flood(ctx context.Context, c floodConfig, key *[blake2s.Size]byte) (floodReport, error) {
	rep := floodReport{Mode: "flood", Kind: c.Kind, Target: c.Target}
	raddr, err := net.ResolveUDPAddr("udp", c.Target)
	if err != nil {
		return rep, err
	}
	if c.Sources > 1 && !raddr.IP.IsLoopback() || c.Sources > 1 && raddr.IP.To4() == nil {
		return rep, fmt.Errorf("%w: --sources needs an IPv4 loopback target", errUsage)
	}
	var conns []*mmsgConn
	for i := range c.Sources {
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
		mc, err := newMmsgConn(conn, c.Batch)
		if err != nil {
			return rep, err
		}
		conns = append(conns, mc)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	one := make([]byte, initiationSize)
	randomInitiation(rng, one, key)
	bufs := make([][]byte, c.Batch)
	for i := range bufs {
		bufs[i] = make([]byte, initiationSize)
		copy(bufs[i], one)
	}
	t0, cpu0 := time.Now(), selfCPU()
	end := t0.Add(c.Duration)
	for round := 0; ctx.Err() == nil; round++ {
		mc := conns[round%len(conns)]
		now := time.Now()
		if !now.Before(end) {
			break
		}
		if c.Rate > 0 {
			if due := t0.Add(time.Duration(float64(rep.Sent+rep.SendErrors) / c.Rate * float64(time.Second))); due.After(now) {
				time.Sleep(min(due.Sub(now), end.Sub(now)))
				continue
			}
		}
		for _, b := range bufs {
			switch c.Kind {
			case floodInitiation:
				putRandomID(rng, b)
			case floodFresh:
				randomInitiation(rng, b, key)
			case floodJunk:
				fillRandom(rng, b)
				b[0] = msgInitiation
				putRandomID(rng, b)
			}
		}
		n, err := mc.send(bufs)
		rep.Sent += uint64(n)
		if err != nil {
			if isClosed(err) {
				break
			}
			rep.SendErrors += uint64(len(bufs) - n) // ECONNREFUSED after an ICMP error, ENOBUFS: keep going
		}
	}
	rep.Seconds = time.Since(t0).Seconds()
	rep.CPUSec = (selfCPU() - cpu0).Seconds()
	if rep.Seconds > 0 {
		rep.PerSecond = float64(rep.Sent) / rep.Seconds
	}
	return rep, nil
}

// randomInitiation fills b (148 bytes) with an initiation of random content
// and a random non-zero client ID, with a valid mac1 for key if key is set
// (computed with the client ID zeroed, as WARP clients do).
func randomInitiation(rng *rand.Rand, b []byte, key *[blake2s.Size]byte) {
	fillRandom(rng, b)
	b[0], b[1], b[2], b[3] = msgInitiation, 0, 0, 0
	if key != nil {
		putMAC1(b, key)
	}
	putRandomID(rng, b)
}

// putRandomID writes a random non-zero client ID into bytes 1..3.
func putRandomID(rng *rand.Rand, b []byte) {
	v := rng.Uint32()&0xffffff | 1
	b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16)
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64()
		for j := i; j < min(i+8, len(b)); j++ {
			b[j] = byte(v)
			v >>= 8
		}
	}
}

// mac1Key is the key of WireGuard's mac1 for the responder whose public key
// is pub (base64): BLAKE2s-256("mac1----" || pub). udpbench computes it
// itself, apart from the relay's code it measures.
func mac1Key(pub string) ([blake2s.Size]byte, error) {
	var k [blake2s.Size]byte
	raw, err := base64.StdEncoding.DecodeString(pub)
	if err != nil || len(raw) != 32 {
		return k, fmt.Errorf("%q is not a base64 WireGuard public key (32 bytes)", pub)
	}
	h, _ := blake2s.New256(nil)
	h.Write([]byte("mac1----"))
	h.Write(raw)
	h.Sum(k[:0])
	return k, nil
}

// putMAC1 writes into initiation b the mac1 for key: keyed BLAKE2s-128 over
// bytes 0..115, with bytes 1..3 counted as zero.
func putMAC1(b []byte, key *[blake2s.Size]byte) {
	var scratch [mac1Offset]byte
	copy(scratch[:], b[:mac1Offset])
	scratch[1], scratch[2], scratch[3] = 0, 0, 0
	h, _ := blake2s.New128(key[:])
	h.Write(scratch[:])
	copy(b[mac1Offset:mac1Offset+16], h.Sum(nil))
}
