//go:build !race

// Package racecheck tells tests whether the race detector is on. Under it,
// sync.Pool drops a share of what it is given on purpose, so allocation
// guards that rely on pools run only without -race (the README's test
// command runs them both ways).
package racecheck

// Enabled is true when built with -race.
const Enabled = false
