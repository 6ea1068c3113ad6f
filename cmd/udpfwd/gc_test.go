package main

import (
	"runtime/debug"
	"testing"
)

// The daemon lowers the garbage collector's percent only when GOGC is not
// set: an operator's GOGC, a number or off, is left in force.
func TestSetGCPercent(t *testing.T) {
	const before = 100
	prev := debug.SetGCPercent(before)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	for _, tc := range []struct {
		name string
		gogc string
		set  bool
		want int
	}{
		{"unset", "", true, defaultGCPercent},
		{"a number", "200", false, before},
		{"off", "off", false, before},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetGCPercent(before)
			env := func(k string) string {
				if k == "GOGC" {
					return tc.gogc
				}
				return ""
			}
			if set := setGCPercent(env); set != tc.set {
				t.Errorf("GOGC=%q: set %v, want %v", tc.gogc, set, tc.set)
			}
			if got := debug.SetGCPercent(before); got != tc.want {
				t.Errorf("GOGC=%q: percent %d, want %d", tc.gogc, got, tc.want)
			}
		})
	}
}
