package main

import "runtime/debug"

// defaultGCPercent is the garbage collector's percent (GOGC) the daemon runs
// with unless the environment sets GOGC. Go's default, 100, lets the heap
// grow to twice what is live before it collects, and the process keeps
// most of that resident: with many idle sessions, whose memory is nearly
// all live, that was 5.1-5.9 KB resident per session for some 3.3 KB live
// (README Performance). At 25 the heap grows by a quarter, and an idle
// session costs 4.7-5.0 KB. What it costs: the garbage collector runs four
// times as often for the same allocations, and it is admissions that
// allocate (about 7.5 KB a session opened); forwarding a datagram allocates
// nothing, so steady traffic hardly makes it run (0 or 1 collections in a
// 5-second throughput run).
const defaultGCPercent = 25

// setGCPercent sets the garbage collector's percent to defaultGCPercent,
// unless getenv("GOGC") is set (to anything: a number, or off), so that an
// operator keeps the last word. It reports whether it set it. The percent
// in force is the go_gc_gogc_percent metric.
func setGCPercent(getenv func(string) string) bool {
	if getenv("GOGC") != "" {
		return false
	}
	debug.SetGCPercent(defaultGCPercent)
	return true
}
