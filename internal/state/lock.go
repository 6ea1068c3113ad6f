package state

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Lock is one process's exclusive claim on a state file: an flock(2) on the
// sibling file PATH.lock, held until Release or the process's exit (the
// kernel drops it however the process ends). The lock is on a sibling
// because the state file itself is replaced by rename on every save, and a
// lock on it would stay with the old file. The lock file holds the owner's
// PID, so that a second process can name it; it is left in place on exit.
type Lock struct {
	f *os.File
}

// LockedError says another process holds the state file's lock.
type LockedError struct {
	Path string // the state file
	PID  int    // the holder's PID, 0 if the lock file does not say
}

func (e *LockedError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("state file %s is in use by another process (pid %d); give each udpfwd its own state_file", e.Path, e.PID)
	}
	return fmt.Sprintf("state file %s is in use by another process (pid unknown); give each udpfwd its own state_file", e.Path)
}

// LockPath is the lock file of the state file at path.
func LockPath(path string) string { return path + ".lock" }

// Acquire takes the lock of the state file at path without waiting, and
// writes this process's PID into the lock file. If another process holds
// it, the error is a *LockedError naming that process.
func Acquire(path string) (*Lock, error) {
	lp := LockPath(path)
	f, err := os.OpenFile(lp, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0o600)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			err = regular(fs.ModeSymlink)
		}
		return nil, fmt.Errorf("lock file %s: %w", lp, plainErr(err))
	}
	fail := func(err error) (*Lock, error) {
		f.Close()
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(fmt.Errorf("lock file %s: %w", lp, plainErr(err)))
	}
	if err := regular(fi.Mode()); err != nil {
		return fail(fmt.Errorf("lock file %s: %w", lp, err))
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return fail(fmt.Errorf("lock file %s: %w", lp, err))
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = unix.Flock(int(fd), unix.LOCK_EX|unix.LOCK_NB) }); err != nil {
		return fail(fmt.Errorf("lock file %s: %w", lp, err))
	}
	if errors.Is(ferr, unix.EWOULDBLOCK) {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		pid, _ := strconv.Atoi(string(bytes.TrimSpace(b[:n])))
		return fail(&LockedError{Path: path, PID: max(pid, 0)})
	}
	if ferr != nil {
		return fail(fmt.Errorf("lock file %s: flock: %w", lp, ferr))
	}
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := f.Truncate(0); err != nil {
		return fail(fmt.Errorf("lock file %s: %w", lp, plainErr(err)))
	}
	if _, err := f.WriteAt(pid, 0); err != nil {
		return fail(fmt.Errorf("lock file %s: %w", lp, plainErr(err)))
	}
	return &Lock{f: f}, nil
}

// Release gives the lock up. It is safe to call on a nil Lock and twice.
func (l *Lock) Release() {
	if l == nil || l.f == nil {
		return
	}
	l.f.Close()
	l.f = nil
}

// CheckDir reports, in one line, why a state file could not be kept at
// path: its directory does not exist, is not a directory, or this process
// may not create files in it. It is what "udpfwd check" and the start ask
// before anything else, so that a mistake shows at once, not at the first
// save.
func CheckDir(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("state file %s: directory %s does not exist", path, dir)
	case err != nil:
		return fmt.Errorf("state file %s: directory %s: %v", path, dir, plainErr(err))
	case !fi.IsDir():
		return fmt.Errorf("state file %s: %s is not a directory", path, dir)
	}
	if err := unix.Faccessat(unix.AT_FDCWD, dir, unix.W_OK|unix.X_OK, unix.AT_EACCESS); err != nil {
		return fmt.Errorf("state file %s: directory %s is not writable: %v", path, dir, err)
	}
	return nil
}
