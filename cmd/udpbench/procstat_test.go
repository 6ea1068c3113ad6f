package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    procStat
		wantErr bool
	}{
		{
			name: "fixture with parentheses and spaces in comm",
			line: mustRead(t, "testdata/proc/101/stat"),
			want: procStat{pid: 101, ppid: 100, comm: "my (odd) name", state: 'S', utime: 40, stime: 10},
		},
		{
			name: "fixture with reaped children",
			line: mustRead(t, "testdata/proc/100/stat"),
			want: procStat{pid: 100, ppid: 1, comm: "socat", state: 'S', utime: 150, stime: 50, cutime: 7, cstime: 3},
		},
		{
			name: "real line from /proc/self/stat of cat",
			line: "26273 (cat) R 26268 26268 2180 0 -1 4194304 99 0 0 0 3 1 0 0 20 0 1 0 120540 3133440 383 18446744073709551615 94114106753024 0\n",
			want: procStat{pid: 26273, ppid: 26268, comm: "cat", state: 'R', utime: 3, stime: 1},
		},
		{name: "no comm", line: "1 S 0 0", wantErr: true},
		{name: "truncated", line: "1 (x) S 0 0 0 0", wantErr: true},
		{name: "bad number", line: "1 (x) S 0 0 0 0 -1 0 0 0 0 0 x 0 0 0 20", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcStat([]byte(tt.line))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseStatusKB(t *testing.T) {
	tests := []struct {
		name      string
		content   string
		key       string
		want      uint64
		wantFound bool
		wantErr   bool
	}{
		{"fixture VmHWM", mustRead(t, "testdata/proc/100/status"), "VmHWM", 2048, true, false},
		{"fixture VmRSS", mustRead(t, "testdata/proc/100/status"), "VmRSS", 1900, true, false},
		{"zombie has none", mustRead(t, "testdata/proc/102/status"), "VmHWM", 0, false, false},
		{"prefix of another key is not it", "VmHWMx:\t1 kB\n", "VmHWM", 0, false, false},
		{"unit missing", "VmHWM:\t12\n", "VmHWM", 0, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, found, err := parseStatusKB([]byte(tt.content), tt.key)
			if (err != nil) != tt.wantErr || found != tt.wantFound || got != tt.want {
				t.Errorf("= %d, %v, %v; want %d, %v, err %v", got, found, err, tt.want, tt.wantFound, tt.wantErr)
			}
		})
	}
}

func TestParseMachineCPU(t *testing.T) {
	b := []byte(mustRead(t, "testdata/stat"))
	tests := []struct {
		name      string
		line      string
		busyTicks uint64
		steal     uint64
		wantErr   bool
	}{
		{"whole machine", "cpu", 13670 + 5 + 7032 + 7 + 650, 39, false},
		{"one cpu", "cpu1", 6835 + 3 + 3516 + 4 + 325, 19, false},
		{"missing cpu", "cpu7", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMachineCPU(b, tt.line)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && (got.Busy != ticksToDuration(tt.busyTicks) || got.Steal != ticksToDuration(tt.steal)) {
				t.Errorf("got %+v, want busy %v steal %v", got, ticksToDuration(tt.busyTicks), ticksToDuration(tt.steal))
			}
		})
	}
}

func TestSampleTreesFixture(t *testing.T) {
	trees, softirqd, err := sampleTrees("testdata/proc", 100, 200)
	if err != nil {
		t.Fatal(err)
	}
	// Tree of 100: itself (150+50+7+3), child 101 (40+10), zombie grandchild 102 (5+5).
	if want := ticksToDuration(150 + 50 + 7 + 3 + 40 + 10 + 5 + 5); trees[0].CPU != want {
		t.Errorf("tree 100 CPU = %v, want %v", trees[0].CPU, want)
	}
	if trees[0].HWMKB != 2048+1024 {
		t.Errorf("tree 100 VmHWM = %d kB, want %d (the zombie has none)", trees[0].HWMKB, 2048+1024)
	}
	if got := slices.Sorted(slices.Values(trees[0].PIDs)); !slices.Equal(got, []int{100, 101, 102}) {
		t.Errorf("tree 100 PIDs = %v, want [100 101 102]", got)
	}
	if want := ticksToDuration(999 + 999); trees[1].CPU != want || len(trees[1].PIDs) != 1 {
		t.Errorf("tree 200 = %+v, want CPU %v and one process", trees[1], want)
	}
	if softirqd != ticksToDuration(12) {
		t.Errorf("ksoftirqd = %v, want %v", softirqd, ticksToDuration(12))
	}
	if _, _, err := sampleTrees("testdata/proc", 4242); err == nil {
		t.Error("sampling a missing process: want an error")
	}
}

func TestSampleTreesSelf(t *testing.T) {
	// Burn two ticks' worth of CPU (at 100 ticks/s) so the sample cannot be
	// zero: CPU time, not wall time, which a busy machine may not turn into
	// CPU time.
	before, deadline := selfCPU(), time.Now().Add(waitTimeout)
	for x := 0; selfCPU()-before < 20*time.Millisecond && time.Now().Before(deadline); x++ {
		_ = x * x
	}
	trees, _, err := sampleTrees("/proc", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if trees[0].CPU <= 0 || trees[0].HWMKB == 0 || trees[0].PIDs[0] != os.Getpid() {
		t.Errorf("self sample %+v: want CPU > 0, VmHWM > 0, root first", trees[0])
	}
}

func TestClockTicks(t *testing.T) {
	if clockTicks < 10 || clockTicks > 10000 {
		t.Errorf("clockTicks = %d, implausible", clockTicks)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.FromSlash(path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
