package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// openRegular opens path for reading if it is a regular file. It refuses a
// symbolic link (udpfwd writes the file itself, by rename, so a link there
// is someone else's doing, and following one to /dev/zero or a FIFO is how a
// relay hangs or fills its memory) and anything else that is not a regular
// file. The type is checked before opening, so a device is never opened;
// the open does not block and does not follow a link, and the opened file is
// checked again, so a file swapped in between is refused too. A missing
// file is fs.ErrNotExist.
func openRegular(path string) (*os.File, error) {
	before, err := os.Lstat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("cannot be read: %w", plainErr(err))
	}
	if err := regular(before.Mode()); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, regular(fs.ModeSymlink)
		}
		return nil, fmt.Errorf("cannot be read: %w", plainErr(err))
	}
	after, err := f.Stat()
	if err == nil {
		err = regular(after.Mode())
	}
	if err == nil && !os.SameFile(before, after) {
		err = errors.New("replaced while being opened")
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// regular says why a file of mode m is not a state file, or nil if it is a
// regular file.
func regular(m fs.FileMode) error {
	var what string
	switch {
	case m.IsRegular():
		return nil
	case m&fs.ModeSymlink != 0:
		return errors.New("a symbolic link; udpfwd follows none there, it writes a regular file")
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
	return fmt.Errorf("%s, not a regular file", what)
}

// plainErr drops the operation and path that package os puts on errors,
// since the caller names the file itself.
func plainErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}
