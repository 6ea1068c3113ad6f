package main

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitTimeout bounds every wait for something that should happen: a reply
// that is merely late, a process that should exit. It only costs time when
// a test fails, so it is generous: a -race run on two busy cores can be slow
// by seconds.
const waitTimeout = 30 * time.Second

// gen through the in-process echo: both modes run, every datagram comes
// back (the loss timeout and the drain are generous, so a late reply on a
// busy machine is not counted lost), and the report is consistent.
func TestGenAgainstInProcessEcho(t *testing.T) {
	code, out, obj := runCLI(t, "gen", "--mode", "both", "--duration", "700ms", "--warmup", "200ms",
		"--drain", waitTimeout.String(), "--loss-timeout", waitTimeout.String())
	if code != 0 {
		t.Fatalf("exit status %d: %v\n%s", code, obj["error"], out)
	}
	if !strings.Contains(out, "throughput") || !strings.Contains(out, "pingpong") {
		t.Errorf("table lacks a mode row:\n%s", out)
	}
	runs, _ := obj["runs"].([]any)
	if len(runs) != 2 {
		t.Fatalf("%d runs in the JSON, want 2", len(runs))
	}
	for i, mode := range []string{"throughput", "pingpong"} {
		r := runs[i].(map[string]any)
		num := func(k string) float64 { v, _ := r[k].(float64); return v }
		if r["mode"] != mode {
			t.Errorf("run %d mode %v, want %s", i, r["mode"], mode)
		}
		if num("answered") == 0 || num("pps") <= 0 || num("mbps") <= 0 {
			t.Errorf("%s: answered %v pps %v mbps %v: datagrams did not flow", mode, num("answered"), num("pps"), num("mbps"))
		}
		if num("lost") != 0 || num("lost_total") != 0 || num("loss_pct") != 0 {
			t.Errorf("%s: lost %v (total %v), want 0 through the in-process echo", mode, num("lost"), num("lost_total"))
		}
		if num("bad")+num("foreign")+num("dup") != 0 {
			t.Errorf("%s: bad %v foreign %v dup %v, want none", mode, num("bad"), num("foreign"), num("dup"))
		}
		if num("sent") < num("answered") || num("sent_total") < num("sent") {
			t.Errorf("%s: sent %v, answered %v, sent_total %v: inconsistent", mode, num("sent"), num("answered"), num("sent_total"))
		}
		rtt := r["rtt"].(map[string]any)
		if rtt["samples"].(float64) != num("answered") || rtt["p50_us"].(float64) <= 0 || rtt["p99_us"].(float64) < rtt["p50_us"].(float64) {
			t.Errorf("%s: rtt %v inconsistent with %v answered", mode, rtt, num("answered"))
		}
		if num("gen_cpu_s") <= 0 {
			t.Errorf("%s: generator CPU %v, want > 0", mode, num("gen_cpu_s"))
		}
	}
	if w := runs[0].(map[string]any)["window"].(float64); w != 64 {
		t.Errorf("throughput window %v, want the default 64", w)
	}
}

// lossyEcho echoes datagrams except transport datagrams whose counter is
// 3 mod 10 (dropped) or 7 mod 10 (sent back with another client ID).
func lossyEcho(t *testing.T) *net.UDPAddr {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			b := buf[:n]
			if n >= minTransportLen && b[0] == msgTransport {
				switch binary.LittleEndian.Uint64(b[offCounter:]) % 10 {
				case 3:
					continue
				case 7:
					b[1] ^= 0xff
				}
			}
			if _, err := c.WriteToUDPAddrPort(b, from); err != nil {
				return
			}
		}
	})
	t.Cleanup(func() {
		c.Close()
		wg.Wait()
	})
	return c.LocalAddr().(*net.UDPAddr)
}

// The generator counts loss exactly: through an echo that drops one
// datagram in ten and misdelivers another, every one of them is lost, the
// misdelivered ones are also counted foreign, and nothing else is lost but
// legitimate replies that came too late (after the loss timeout in
// ping-pong, after the drain in throughput). The loss timeout is short, so
// on a busy machine some replies are late; those the run did not see are
// read from the socket afterwards, so the count is checked exactly however
// late they were.
func TestGenCountsLossExactly(t *testing.T) {
	target := lossyEcho(t)
	for _, mode := range []string{"throughput", "pingpong"} {
		t.Run(mode, func(t *testing.T) {
			cfg := genConfig{Clients: 1, Window: 16, Size: 64, Batch: 16, Duration: 400 * time.Millisecond,
				Warmup: 100 * time.Millisecond, Drain: 300 * time.Millisecond, LossTimeout: 20 * time.Millisecond, SockBuf: defaultSockBuf}
			cs, err := openClients(target, cfg.Clients, cfg.Batch, cfg.SockBuf, cfg.Size)
			if err != nil {
				t.Fatal(err)
			}
			defer cs.close()
			if err := cs.handshake(context.Background(), waitTimeout); err != nil {
				t.Fatal(err)
			}
			res, err := cs.run(context.Background(), mode, cfg, runHooks{})
			if err != nil {
				t.Fatal(err)
			}
			n := res.SentTotal
			wantDropped, wantForeign := (n+6)/10, (n+2)/10 // q < n with q%10 == 3, resp. 7
			tooLate := uint64(0)                           // legitimate replies the run saw after their loss timeout
			if mode == "pingpong" {
				tooLate = res.Late
			}
			if res.LostTotal < wantDropped+wantForeign+tooLate || res.Foreign > wantForeign {
				t.Fatalf("lost_total %d, foreign %d, late %d of %d sent: want %d dropped + %d misdelivered lost (and the late ones), %d foreign",
					res.LostTotal, res.Foreign, res.Late, n, wantDropped, wantForeign, wantForeign)
			}
			// What the run counted lost beyond the echo's doing must be late
			// replies still on their way, and the foreign replies it did not
			// see must be on their way too: read them.
			c := cs.clients[0]
			legit, foreign := uint64(0), uint64(0)
			needLegit, needForeign := res.LostTotal-wantDropped-wantForeign-tooLate, wantForeign-res.Foreign
			c.conn.SetReadDeadline(time.Now().Add(waitTimeout))
			for legit < needLegit || foreign < needForeign {
				k, err := c.conn.Read(c.rbufs[0])
				if err != nil {
					t.Fatalf("lost_total %d and foreign %d of %d sent: %d more lost than the echo dropped or misdelivered, and %d foreign replies missing; "+
						"after the run only %d late replies and %d foreign ones came: %v", res.LostTotal, res.Foreign, n, needLegit, needForeign, legit, foreign, err)
				}
				b := c.rbufs[0][:k]
				if r, ok := parseTransport(b, cfg.Size); ok && r.epoch == cs.epoch {
					switch {
					case isForeign(b, c.id):
						foreign++
					case r.seq%10 != 3 && r.seq%10 != 7:
						legit++
					}
				}
			}
			t.Logf("%d sent, %d lost (%d dropped, %d misdelivered, %d replies late), %d foreign; in the window %d of %d lost",
				n, res.LostTotal, wantDropped, wantForeign, tooLate+legit, res.Foreign, res.Lost, res.Sent)
			// In the window, of any ten consecutive datagrams the echo drops
			// one and misdelivers one; late replies may add to that.
			if lo, hi := 2*(res.Sent/10), 2*((res.Sent+9)/10)+tooLate+legit; res.Lost < lo || res.Lost > hi {
				t.Errorf("%d of %d lost in the window, want %d..%d", res.Lost, res.Sent, lo, hi)
			}
			if mode == "throughput" && res.WrittenOff == 0 {
				t.Error("throughput: no window slot was refilled although a fifth of the datagrams never came back")
			}
		})
	}
}

func TestHandshakeTimesOut(t *testing.T) {
	// A socket that never answers: the handshake must give up on time.
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	cs, err := openClients(silent.LocalAddr().(*net.UDPAddr), 2, 4, 0, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.close()
	start := time.Now()
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- cs.handshake(context.Background(), 300*time.Millisecond) }()
	select {
	case err := <-gaveUp:
		if err == nil || !strings.Contains(err.Error(), "not echoed") {
			t.Errorf("err = %v, want a handshake timeout", err)
		}
		t.Logf("the handshake gave up after %v (its timeout: 300ms)", time.Since(start).Round(time.Millisecond))
	case <-time.After(waitTimeout):
		t.Fatalf("the handshake with a 300ms timeout still waits after %v", waitTimeout)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := cs.handshake(ctx, time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled handshake: err = %v, want context.Canceled", err)
	}
}

func TestLimitShort(t *testing.T) {
	cpu, err := pickCPU(-1)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		api   string
		batch int
	}{
		{"raw batched", "raw", 64},
		{"xnet batched", "xnet", 64},
		{"raw single", "raw", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			row, err := measureLimit(limitConfig{Size: 64, Batch: tt.batch, Duration: 150 * time.Millisecond, SockBuf: defaultSockBuf}, cpu, tt.api, tt.batch)
			if err != nil {
				t.Fatal(err)
			}
			if row.Datagrams == 0 || row.Datagrams%uint64(tt.batch) != 0 || row.PPS <= 0 || row.CPUUsPerDgram <= 0 {
				t.Errorf("row %+v: want whole batches moved and CPU per datagram > 0", row)
			}
		})
	}
	if _, err := pickCPU(1 << 14); err == nil {
		t.Error("pickCPU of a CPU outside the mask: want an error")
	}
}
