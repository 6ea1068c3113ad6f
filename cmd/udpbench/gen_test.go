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

func TestGenAgainstInProcessEcho(t *testing.T) {
	code, out, obj := runCLI(t, "gen", "--mode", "both", "--duration", "700ms", "--warmup", "200ms", "--drain", "2s")
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
		if num("answered") < 100 || num("pps") <= 0 || num("mbps") <= 0 {
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

func TestGenCountsLossExactly(t *testing.T) {
	target := lossyEcho(t)
	tests := []struct {
		name string
		mode string
	}{
		{"throughput", "throughput"},
		{"pingpong", "pingpong"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := genConfig{Clients: 1, Window: 16, Size: 64, Batch: 16, Duration: 400 * time.Millisecond,
				Warmup: 100 * time.Millisecond, Drain: 300 * time.Millisecond, LossTimeout: 20 * time.Millisecond, SockBuf: defaultSockBuf}
			cs, err := openClients(target, cfg.Clients, cfg.Batch, cfg.SockBuf, cfg.Size)
			if err != nil {
				t.Fatal(err)
			}
			defer cs.close()
			if err := cs.handshake(context.Background(), 5*time.Second); err != nil {
				t.Fatal(err)
			}
			res, err := cs.run(context.Background(), tt.mode, cfg, runHooks{})
			if err != nil {
				t.Fatal(err)
			}
			n := res.SentTotal
			wantDropped, wantForeign := (n+6)/10, (n+2)/10 // q < n with q%10 == 3, resp. 7
			if res.LostTotal != wantDropped+wantForeign {
				t.Errorf("lost_total %d, want %d dropped + %d misdelivered of %d sent", res.LostTotal, wantDropped, wantForeign, n)
			}
			if res.Foreign != wantForeign {
				t.Errorf("foreign %d, want %d", res.Foreign, wantForeign)
			}
			if res.Answered == 0 || res.LossPct < 15 || res.LossPct > 25 {
				t.Errorf("answered %d, loss %.2f %%: want about 20 %% lost in the window", res.Answered, res.LossPct)
			}
			if tt.mode == "throughput" && res.WrittenOff == 0 {
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
	err = cs.handshake(context.Background(), 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "not echoed") {
		t.Errorf("err = %v, want a handshake timeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("handshake gave up after %v, want about 300ms", d)
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
