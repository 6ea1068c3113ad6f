// Package fileio opens the files udpfwd is given by path (its config file,
// forward rules, TLS material, token files) as data, whatever the path
// names: only a regular file is read, a named pipe never blocks the
// process (it is opened non-blocking and refused), a device such as
// /dev/zero is refused rather than read without end, and what is read is
// capped in size. A symbolic link is followed; what it names must be a
// regular file. The state file has rules of its own (internal/state).
package fileio

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// MaxSize is the cap for files whose size nothing else bounds: a config
// file or a forward file of many thousand rules is far below it, and so is
// any certificate chain.
const MaxSize = 4 << 20

// Open opens path for reading if it is a regular file. It does not block
// on a named pipe. Its errors read "path: what is wrong".
func Open(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the caller's message names the path, not "open"
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = Regular(fi.Mode())
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// ReadFile reads the regular file path, refusing one larger than limit
// bytes.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}

// Regular says why a file of mode m is not read, or nil if it is a
// regular file.
func Regular(m fs.FileMode) error {
	var what string
	switch {
	case m.IsRegular():
		return nil
	case m.IsDir():
		what = "a directory"
	case m&fs.ModeNamedPipe != 0:
		what = "a named pipe (FIFO)"
	case m&fs.ModeDevice != 0:
		what = "a device"
	case m&fs.ModeSocket != 0:
		what = "a socket"
	default:
		what = "a special file"
	}
	return errors.New(what + ", not a regular file")
}
