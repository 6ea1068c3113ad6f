package fileio

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A regular file is read whole, up to the limit; anything else a path can
// name is refused in one line, at once: a named pipe without a writer does
// not block, a device is not read, a directory is not a file.
func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "ok")
	if err := os.WriteFile(ok, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFile(ok, 5); err != nil || string(b) != "hello" {
		t.Fatalf("ReadFile(5 bytes, limit 5) = %q, %v", b, err)
	}
	if _, err := ReadFile(ok, 4); err == nil || !strings.Contains(err.Error(), "larger than 4 bytes") {
		t.Fatalf("ReadFile(5 bytes, limit 4): %v, want larger than 4 bytes", err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(ok, link); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFile(link, 5); err != nil || string(b) != "hello" {
		t.Fatalf("a symbolic link to a regular file: %q, %v", b, err)
	}

	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{fifo, "a named pipe (FIFO), not a regular file"},
		{zero, "a device, not a regular file"},
		{dir, "a directory, not a regular file"},
		{filepath.Join(dir, "missing"), "no such file or directory"},
	} {
		done := make(chan error, 1)
		go func() { _, err := ReadFile(c.path, MaxSize); done <- err }()
		select {
		case err := <-done:
			if err == nil || err.Error() != c.path+": "+c.want {
				t.Errorf("ReadFile(%s): %v, want %q", c.path, err, c.path+": "+c.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("ReadFile(%s) blocked", c.path)
		}
	}
}
