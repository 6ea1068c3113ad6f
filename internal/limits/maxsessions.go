package limits

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Bounds of the default session cap.
const (
	// ReservedFiles is how many open files the relay keeps for itself
	// whatever the limit: standard streams, listening sockets, epoll and
	// the runtime's wake-up descriptor, log files, resolver sockets.
	ReservedFiles = 64
	// AdminFiles is the most open files the admin listener uses: its
	// listening socket, its 64 connections and one /proc file for each of
	// the 4 scrapes it serves at once. internal/admin defines
	// admin.MaxFiles as this figure (and its test checks that its own caps
	// add up to it); it lives here so that the session cap's margin counts
	// it without limits importing the admin listener.
	AdminFiles = 1 + 64 + 4
	// MaxDefaultSessions caps the default however high the open-file limit
	// is (Go raises the soft limit to the hard one, often 1 048 576). Each
	// session binds one upstream port, and Linux's default ephemeral range
	// (32768-60999) has 28 232 ports per local address; an idle session
	// costs about 5 KB resident (its actors, socket, record and timer;
	// README Performance), so the default stays under 100 MB. Operators
	// who want more say --max-sessions.
	MaxDefaultSessions = 16384
)

// DefaultMaxSessions is the session cap used when --max-sessions is not
// given, for a process whose open-file limit is nofile. Each session holds
// one file (its upstream socket). The relay keeps ReservedFiles, the admin
// listener's AdminFiles and an eighth of the limit as margin for itself,
// for sockets opening while others close and for the upstream sockets the
// supervisor keeps dialled ahead (64), and never defaults above
// MaxDefaultSessions. nofile of zero (unknown) or RLIM_INFINITY gives
// MaxDefaultSessions. The result is at least 1.
//
// Examples: 1024 gives 763; 4096 gives 3451; 65536 gives 16384.
func DefaultMaxSessions(nofile uint64) int {
	if nofile == 0 || nofile == unix.RLIM_INFINITY {
		return MaxDefaultSessions
	}
	margin := ReservedFiles + AdminFiles + nofile/8
	if nofile <= margin {
		return 1
	}
	return int(min(nofile-margin, MaxDefaultSessions))
}

// OpenFileLimit returns the process's soft open-file limit (RLIMIT_NOFILE).
// Read it after the Go runtime starts: it has already raised the soft limit
// to the hard one.
func OpenFileLimit() (uint64, error) {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("getrlimit(RLIMIT_NOFILE): %w", err)
	}
	return r.Cur, nil
}
