// Package state saves the relay's sessions to a file and reads them back,
// so that a restarted relay re-binds every session's upstream socket to the
// same local port and the upstream keeps seeing the same 4-tuples.
//
// The file is JSON, written atomically (a temporary file in the same
// directory, fsync, rename, fsync of the directory), so a crash leaves
// either the old file or the new one. A file that cannot be read as a state
// file is moved aside, never deleted.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Version is the file format's version; a file of another version is
// treated as foreign.
const Version = 1

// magic identifies a udpfwd state file.
const magic = "udpfwd-state"

// File is the content of a state file.
type File struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	Saved   time.Time `json:"saved"`
	// Relays holds each relay's sessions by relay name.
	Relays map[string][]Session `json:"relays"`
}

// Session is one saved session.
type Session struct {
	ID     string `json:"id"`     // the session's UUID
	Client string `json:"client"` // the client ID in hex
	// ClientAddr is where replies went (the confirmed client address).
	ClientAddr string `json:"client_addr"`
	// UpstreamLocal is the session's upstream socket address: the port
	// that is re-bound.
	UpstreamLocal string `json:"upstream_local"`
	// Upstream is the upstream address the socket was connected to, and
	// UpstreamConfig the relay's configured upstream ("host:port") at the
	// time; a session is restored only into a relay with the same one.
	Upstream       string    `json:"upstream"`
	UpstreamConfig string    `json:"upstream_config"`
	Created        time.Time `json:"created"`
	// Roam is the session's roaming state (learned indexes), opaque here.
	Roam json.RawMessage `json:"roam,omitempty"`
}

// New returns an empty state.
func New() *File {
	return &File{Format: magic, Version: Version, Relays: map[string][]Session{}}
}

// CorruptError says the file exists but is not a state file udpfwd can
// read. Load's caller should move it aside with Quarantine and start empty.
type CorruptError struct {
	Path string
	Err  error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("state file %s is not a udpfwd state file: %v", e.Path, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Load reads a state file. A missing file is an empty state; an unreadable
// one is an error; one that is not a udpfwd state file of this version is
// a *CorruptError.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return New(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, &CorruptError{Path: path, Err: err}
	}
	if f.Format != magic {
		return nil, &CorruptError{Path: path, Err: fmt.Errorf("format %q, want %q", f.Format, magic)}
	}
	if f.Version != Version {
		return nil, &CorruptError{Path: path, Err: fmt.Errorf("version %d, want %d", f.Version, Version)}
	}
	if f.Relays == nil {
		f.Relays = map[string][]Session{}
	}
	return &f, nil
}

// Save writes f to path atomically.
func Save(path string, f *File) error {
	f.Format, f.Version = magic, Version
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("save state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // make the rename durable; not all filesystems support it
		d.Close()
	}
	return nil
}

// Quarantine moves a bad state file aside (PATH.bad-TIMESTAMP) and returns
// the new name. It never deletes anything.
func Quarantine(path string, now time.Time) (string, error) {
	aside := fmt.Sprintf("%s.bad-%s", path, now.UTC().Format("20060102T150405.000000000Z"))
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("move bad state file aside: %w", err)
	}
	return aside, nil
}
