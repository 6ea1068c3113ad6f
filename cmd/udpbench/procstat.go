package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// procStat is the part of /proc/PID/stat that udpbench uses.
type procStat struct {
	pid, ppid int
	comm      string
	state     byte
	// CPU times in clock ticks: of the process itself (all its threads)
	// and of its reaped children.
	utime, stime, cutime, cstime uint64
}

// parseProcStat parses the single line of /proc/PID/stat. The command name
// is in parentheses and may itself contain spaces and parentheses, so the
// fields are counted from the last ')'.
func parseProcStat(b []byte) (procStat, error) {
	var s procStat
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return s, errors.New("proc stat: no (comm)")
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return s, fmt.Errorf("proc stat: pid: %w", err)
	}
	s.pid = pid
	s.comm = string(b[open+1 : closing])
	// After ")": field 3 (state) is rest[0], field N is rest[N-3].
	rest := bytes.Fields(b[closing+1:])
	if len(rest) < 15 {
		return s, fmt.Errorf("proc stat: %d fields after comm, want >= 15", len(rest))
	}
	if len(rest[0]) != 1 {
		return s, fmt.Errorf("proc stat: state %q", rest[0])
	}
	s.state = rest[0][0]
	nums := make([]uint64, 0, 5)
	for _, f := range []int{4, 14, 15, 16, 17} { // ppid, utime, stime, cutime, cstime
		v, err := strconv.ParseInt(string(rest[f-3]), 10, 64)
		if err != nil {
			return s, fmt.Errorf("proc stat: field %d: %w", f, err)
		}
		nums = append(nums, uint64(max(v, 0)))
	}
	s.ppid = int(nums[0])
	s.utime, s.stime, s.cutime, s.cstime = nums[1], nums[2], nums[3], nums[4]
	return s, nil
}

// parseStatusKB returns the value in kB of field key (e.g. "VmHWM") from
// /proc/PID/status content. found is false when the field is absent, as it
// is for zombies and kernel threads.
func parseStatusKB(b []byte, key string) (kb uint64, found bool, err error) {
	for line := range bytes.Lines(b) {
		name, val, ok := bytes.Cut(line, []byte(":"))
		if !ok || string(name) != key {
			continue
		}
		f := bytes.Fields(val)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, true, fmt.Errorf("proc status: %s: unexpected %q", key, bytes.TrimSpace(val))
		}
		v, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil {
			return 0, true, fmt.Errorf("proc status: %s: %w", key, err)
		}
		return v, true, nil
	}
	return 0, false, nil
}

// clockTicks is the kernel's USER_HZ (the unit of utime/stime), read from
// the auxiliary vector (AT_CLKTCK); 100 if that cannot be read.
var clockTicks = func() int64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	const atClkTck = 17
	for ; len(b) >= 16; b = b[16:] {
		k, v := binary.NativeEndian.Uint64(b), binary.NativeEndian.Uint64(b[8:])
		if k == atClkTck && v > 0 {
			return int64(v)
		}
		if k == 0 {
			break
		}
	}
	return 100
}()

// ticksToDuration converts clock ticks to a duration.
func ticksToDuration(t uint64) time.Duration {
	return time.Duration(int64(t) * int64(time.Second) / clockTicks)
}

// readAllStats reads /proc/*/stat of every process, skipping those that
// vanish while being read.
func readAllStats(procRoot string) ([]procStat, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", procRoot, err)
	}
	out := make([]procStat, 0, len(ents))
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "stat"))
		if err != nil {
			continue // the process exited between the listing and the read
		}
		s, err := parseProcStat(b)
		if err != nil {
			return nil, fmt.Errorf("%s/%s/stat: %w", procRoot, e.Name(), err)
		}
		out = append(out, s)
	}
	return out, nil
}

// descendants returns root and every process below it in all, using the
// parent links.
func descendants(all []procStat, root int) []procStat {
	children := make(map[int][]int, len(all))
	byPID := make(map[int]procStat, len(all))
	for _, s := range all {
		children[s.ppid] = append(children[s.ppid], s.pid)
		byPID[s.pid] = s
	}
	var out []procStat
	queue := []int{root}
	seen := map[int]bool{}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		if s, ok := byPID[p]; ok {
			out = append(out, s)
			queue = append(queue, children[p]...)
		}
	}
	return out
}

// treeSample is the resource use of a process tree at one instant.
type treeSample struct {
	// CPU is utime+stime of every live process in the tree plus the times
	// of children they have reaped (cutime+cstime), so CPU spent by a
	// short-lived child is not lost when it exits.
	CPU time.Duration
	// HWMKB is the sum of VmHWM (peak resident set) over the live processes.
	HWMKB uint64
	// PIDs are the live processes of the tree, root first.
	PIDs []int
}

// softirqdCPU sums the CPU time of the kernel's ksoftirqd/N threads: network
// receive work the kernel defers there under load is charged to no relay.
func softirqdCPU(all []procStat) time.Duration {
	var ticks uint64
	for _, s := range all {
		if strings.HasPrefix(s.comm, "ksoftirqd/") {
			ticks += s.utime + s.stime
		}
	}
	return ticksToDuration(ticks)
}

// sampleTrees measures the process trees rooted at roots, and ksoftirqd,
// with one scan of procRoot (normally "/proc"), so they are sampled at the
// same instant.
func sampleTrees(procRoot string, roots ...int) ([]treeSample, time.Duration, error) {
	all, err := readAllStats(procRoot)
	if err != nil {
		return nil, 0, err
	}
	out, err := treesOf(all, procRoot, roots)
	return out, softirqdCPU(all), err
}

func treesOf(all []procStat, procRoot string, roots []int) ([]treeSample, error) {
	out := make([]treeSample, len(roots))
	for i, root := range roots {
		tree := descendants(all, root)
		if len(tree) == 0 {
			return nil, fmt.Errorf("process %d: not running", root)
		}
		var ticks uint64
		for _, s := range tree {
			ticks += s.utime + s.stime + s.cutime + s.cstime
			out[i].PIDs = append(out[i].PIDs, s.pid)
			b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(s.pid), "status"))
			if err != nil {
				continue // exited since the stat scan
			}
			kb, _, err := parseStatusKB(b, "VmHWM")
			if err != nil {
				return nil, fmt.Errorf("process %d: %w", s.pid, err)
			}
			out[i].HWMKB += kb
		}
		out[i].CPU = ticksToDuration(ticks)
	}
	return out, nil
}

// machineCPU is the CPU time of one line of /proc/stat ("cpu" for the
// whole machine, "cpuN" for one CPU).
type machineCPU struct {
	// Busy is user+nice+system+irq+softirq: time some task or interrupt
	// ran (guest time is already inside user).
	Busy time.Duration
	// Steal is time the hypervisor ran something else instead.
	Steal time.Duration
}

// parseMachineCPU finds the line named name in /proc/stat content.
func parseMachineCPU(b []byte, name string) (machineCPU, error) {
	for line := range bytes.Lines(b) {
		f := bytes.Fields(line)
		if len(f) < 9 || string(f[0]) != name {
			continue
		}
		var v [8]uint64
		for i := range v {
			n, err := strconv.ParseUint(string(f[i+1]), 10, 64)
			if err != nil {
				return machineCPU{}, fmt.Errorf("/proc/stat %s: %w", name, err)
			}
			v[i] = n
		}
		// user nice system idle iowait irq softirq steal
		return machineCPU{
			Busy:  ticksToDuration(v[0] + v[1] + v[2] + v[5] + v[6]),
			Steal: ticksToDuration(v[7]),
		}, nil
	}
	return machineCPU{}, fmt.Errorf("/proc/stat: no %q line", name)
}

// readMachineCPU reads line name ("cpu", "cpu1") of /proc/stat.
func readMachineCPU(name string) (machineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	return parseMachineCPU(b, name)
}
