package main

import (
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/limits"
	"github.com/udpfwd/udpfwd/internal/state"
)

// checkStateDir is "udpfwd check"'s test of the state file's place: its
// directory must exist and be writable (nothing to check without a file).
func checkStateDir(path string) error {
	if path == "" {
		return nil
	}
	return state.CheckDir(path)
}

// stateSizeLimit is the largest state file the relays cfgs can have
// written: state.SizeLimit of their session caps summed (a forward relay
// saves none). A larger file is refused unread.
func stateSizeLimit(cfgs []config.Relay) int64 {
	nofile, _ := limits.OpenFileLimit()
	sessions := 0
	for _, c := range cfgs {
		if c.Mode == config.ModeForward {
			continue
		}
		n := c.Security.MaxSessions
		if n <= 0 {
			n = limits.DefaultMaxSessions(nofile)
		}
		sessions += n
	}
	return state.SizeLimit(sessions)
}

// openState makes the state file this process's own and reads it. Its
// directory must exist and be writable, and no other process may hold it
// (both are errors: the start fails). What is at the path is never a
// reason to fail: a file that cannot be used (unreadable, not a regular
// file, larger than limit, not a state file) is moved aside and the relays
// start with no sessions, so that a restart does not fail the same way
// again and again.
func (d *daemon) openState(limit int64) error {
	if d.statePath == "" {
		return nil
	}
	if err := state.CheckDir(d.statePath); err != nil {
		return err
	}
	l, err := state.Acquire(d.statePath)
	if err != nil {
		return err
	}
	d.lock = l
	d.loadState(limit)
	return nil
}

// loadState reads the state file; see openState.
func (d *daemon) loadState(limit int64) {
	f, err := state.Load(d.statePath, limit)
	if err != nil {
		reason := err
		var ce *state.CorruptError
		if errors.As(err, &ce) {
			reason = ce.Err
		}
		aside, qerr := state.Quarantine(d.statePath, time.Now())
		if qerr != nil {
			d.log.Warn("state file unusable and not moved aside; starting with no sessions",
				zap.String("file", d.statePath), zap.NamedError("reason", reason), zap.Error(qerr))
			return
		}
		d.log.Warn("state file unusable; starting with no sessions, the file is kept aside",
			zap.String("file", d.statePath), zap.String("kept_as", aside), zap.NamedError("reason", reason))
		return
	}
	d.saved = f
	n := 0
	for _, ss := range f.Relays {
		n += len(ss)
	}
	d.log.Info("state file read", zap.String("file", d.statePath), zap.Int("sessions", n), zap.Time("saved", f.Saved))
}

// releaseState gives the state file up, after the last save.
func (d *daemon) releaseState() {
	d.lock.Release()
	d.lock = nil
}
