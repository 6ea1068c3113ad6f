package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

func TestLimitRowsEveryCPU(t *testing.T) {
	cpus, err := allowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name         string
		api          string
		size         int
		wantMessages int
	}{
		{"raw", "raw", 64, 64},
		{"gso, one message", "gso", 64, 1},
		{"gso, 46 segments of 1392 bytes per message", "gso", 1392, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := limitConfig{Size: tt.size, Batch: 64, Duration: 200 * time.Millisecond, CPU: -1, SockBuf: defaultSockBuf}
			row, err := measureLimit(cfg, -1, tt.api, 64)
			if err != nil {
				if tt.api == "gso" && strings.Contains(err.Error(), "UDP_SEGMENT") {
					t.Skip(err)
				}
				t.Fatal(err)
			}
			if row.Messages != tt.wantMessages {
				t.Errorf("%d messages per batch, want %d", row.Messages, tt.wantMessages)
			}
			if len(row.PerCPU) != len(cpus) {
				t.Errorf("figures for %d CPUs, want every allowed one (%v)", len(row.PerCPU), cpus)
			}
			found := false
			for _, c := range row.PerCPU {
				if c.CPU == row.CPU {
					found = true
					if c.CPUUsPerDgram != row.CPUUsPerDgram {
						t.Errorf("cpu %d: median %v, row says %v", c.CPU, c.CPUUsPerDgram, row.CPUUsPerDgram)
					}
				}
				if c.CPUUsPerDgram < row.CPUUsPerDgram {
					t.Errorf("cpu %d measured %v, below the row's %v: the row must come from the cheapest CPU", c.CPU, c.CPUUsPerDgram, row.CPUUsPerDgram)
				}
			}
			if !found {
				t.Errorf("row from cpu %d, which was not measured", row.CPU)
			}
			if row.Slices < 1 || row.Datagrams == 0 || row.Datagrams%64 != 0 || row.PPS <= 0 {
				t.Errorf("row %+v: want whole batches over at least one slice", row)
			}
			if !(row.CPUUsMin > 0 && row.CPUUsMin <= row.CPUUsPerDgram && row.CPUUsPerDgram <= row.CPUUsMax) {
				t.Errorf("min %v, median %v, max %v: want 0 < min <= median <= max", row.CPUUsMin, row.CPUUsPerDgram, row.CPUUsMax)
			}
		})
	}
}

// slice returns a sample of n datagrams that cost us µs each on cpu.
func slice(cpu int, us float64) limitSample {
	const n = 1000
	return limitSample{cpu: cpu, moved: n, wall: 2 * time.Millisecond, thread: time.Duration(us * 1e3 * n), proc: time.Duration(us * 1e3 * n)}
}

func TestSummarizeLimit(t *testing.T) {
	samples := []limitSample{
		slice(0, 1.0), slice(1, 1.3),
		slice(0, 5.0), slice(1, 1.2), // a disturbed slice on cpu 0
		slice(0, 1.1), slice(1, 1.25),
	}
	row := summarizeLimit(limitRow{API: "raw", Batch: 64}, samples)
	if row.CPU != 0 || !near(row.CPUUsPerDgram, 1.1) || !near(row.CPUUsMin, 1.0) || !near(row.CPUUsMax, 5.0) || row.Slices != 3 {
		t.Fatalf("row: cpu %d, median %v, min %v, max %v over %d slices; want cpu 0, 1.1, 1.0, 5.0 over 3",
			row.CPU, row.CPUUsPerDgram, row.CPUUsMin, row.CPUUsMax, row.Slices)
	}
	if len(row.PerCPU) != 2 || !near(row.PerCPU[1].CPUUsPerDgram, 1.25) {
		t.Fatalf("per CPU %+v: want cpu 1's median 1.25", row.PerCPU)
	}
	ws := strings.Join(limitWarnings(row), "\n")
	if !strings.Contains(ws, "ranged from 1.000 to 5.000") {
		t.Errorf("warnings %q: want the spread of cpu 0's slices", ws)
	}
	if strings.Contains(ws, "cpu 1 measured") {
		t.Errorf("warnings %q: cpu 1 is within 20 %% of cpu 0", ws)
	}
	row = summarizeLimit(limitRow{}, []limitSample{slice(0, 1.0), slice(1, 1.5)})
	if ws := strings.Join(limitWarnings(row), "\n"); !strings.Contains(ws, "cpu 1 measured 1.50×") {
		t.Errorf("warnings %q: want cpu 1 named as 1.5× cpu 0", ws)
	}
}

func near(a, b float64) bool { return a > b-1e-9 && a < b+1e-9 }

func TestMedian(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{nil, 0},
	} {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestFloorsBeforeAndAfter: per size the lower floor counts, a disagreement
// is noted, and each row is divided by the floor of its own size.
func TestFloorsBeforeAndAfter(t *testing.T) {
	var rep compareReport
	before := []limitRow{{Size: 64, CPUUsPerDgram: 2.6}, {Size: 1392, CPUUsPerDgram: 1.2}}
	after := []limitRow{{Size: 64, CPUUsPerDgram: 1.0}, {Size: 1392, CPUUsPerDgram: 1.3}}
	rep.setFloors(before, after)
	if len(rep.Floors) != 2 || rep.Floors[0].CPUUsPerDgram != 1.0 || rep.Floors[1].CPUUsPerDgram != 1.2 {
		t.Fatalf("floors %+v: want 1.0 at 64 bytes and 1.2 at 1392", rep.Floors)
	}
	if rep.Floor == nil || rep.Floor.Size != 64 || len(rep.FloorRuns) != 4 {
		t.Fatalf("floor %+v, %d runs: want the 64-byte floor and all 4 runs", rep.Floor, len(rep.FloorRuns))
	}
	notes := strings.Join(rep.FloorNotes, "\n")
	if !strings.Contains(notes, "64 bytes: the floor measured 2.600 µs before the relays and 1.000 µs after") || strings.Contains(notes, "1392 bytes") {
		t.Errorf("notes %q: want the 64-byte disagreement only", notes)
	}
	rows := []compareRow{{Relay: "a", Size: 64, RelayUsPerFwd: 1.5}, {Relay: "a", Size: 1392, RelayUsPerFwd: 1.8}, {Relay: "a", Size: 208, RelayUsPerFwd: 2}}
	addRatios(rows, rep.Floors)
	if !near(rows[0].FloorX, 1.5) || !near(rows[1].FloorX, 1.5) || rows[2].FloorX != 0 {
		t.Errorf("floor multiples %v %v %v: want 1.5, 1.5 and none for a size without a floor", rows[0].FloorX, rows[1].FloorX, rows[2].FloorX)
	}
	var out strings.Builder
	printFloors(&out, rep)
	if strings.Count(out.String(), "kernel floor:") != 2 || !strings.Contains(out.String(), "note floor: 64 bytes") {
		t.Errorf("printed:\n%s\nwant a floor line per size and the note", out.String())
	}
}

func TestRunLimitSaysWhatItMeasured(t *testing.T) {
	var out strings.Builder
	cfg := limitConfig{Size: 64, Batch: 64, Duration: 150 * time.Millisecond, CPU: -1, SockBuf: defaultSockBuf}
	rep, err := runLimit(context.Background(), cfg, "raw,raw1", &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 2 || rep.Rows[1].Batch != 1 || rep.FloorUsPerDgram != rep.Rows[0].CPUUsPerDgram || rep.CPU != rep.Rows[0].CPU {
		t.Fatalf("report %+v: want the raw row as the floor and a batch-1 row", rep)
	}
	for _, want := range []string{"connected UDP socket pair", "floor:", "the floor `compare` divides by", "median slice"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if _, err := runLimit(context.Background(), cfg, "raw,dpdk", io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "dpdk") {
		t.Errorf("an unknown row: %v, want a usage error naming it", err)
	}
}
