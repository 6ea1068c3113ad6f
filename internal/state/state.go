// Package state saves the relay's sessions to a file and reads them back,
// so that a restarted relay re-binds every session's upstream socket to the
// same local port and the upstream keeps seeing the same 4-tuples.
//
// The file is JSON, written atomically (a temporary file in the same
// directory, fsync, rename, fsync of the directory), so a crash leaves
// either the old file or the new one. The file is data, never a device: Load
// reads only a regular file (no symbolic link, FIFO, device or directory),
// without blocking, and at most a size derived from the session cap. A file
// that cannot be used is moved aside (Quarantine), never deleted. A lock
// file beside it (Lock) keeps a second process from using the same file.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"

	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Version is the file format's version; a file of another version is
// treated as foreign.
const Version = 1

// magic identifies a udpfwd state file.
const magic = "udpfwd-state"

// Size limits. A file larger than SizeLimit of the relays' session caps is
// refused unread: no legitimate file can be that large, and reading one
// costs memory and start-up time in proportion (a 405 MB file took 6.5 s and
// 726 MB).
const (
	// BytesPerSession bounds one saved session as Save writes it: the
	// longest addresses (IPv6 with a zone), a 253-byte upstream hostname
	// and a full roaming state (roam.MaxIndexes learned indexes) take under
	// 2 KiB (TestBytesPerSessionBound checks it); twice that leaves room.
	BytesPerSession = 4 << 10
	// MinSizeLimit is the limit for small session caps: a file of a few
	// sessions is far smaller, and reading 1 MiB is cheap.
	MinSizeLimit = 1 << 20
)

// SizeLimit is the largest state file Load accepts for relays that together
// may hold sessions sessions: BytesPerSession for each, at least
// MinSizeLimit.
func SizeLimit(sessions int) int64 {
	return max(MinSizeLimit, int64(max(sessions, 0))*BytesPerSession)
}

// File is the content of a state file.
type File struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	Saved   time.Time `json:"saved"`
	// Relays holds each relay's sessions by relay name.
	Relays map[string][]Session `json:"relays"`
}

// Session is one saved session. Its fields are typed: a field that does not
// parse makes the whole file unusable (a *CorruptError), so that a restored
// session never carries half-read values. The JSON is the same as when
// these were strings.
type Session struct {
	ID     uuid.UUID        `json:"id"`     // the session's UUID
	Client wgproto.ClientID `json:"client"` // the client ID, in hex
	// ClientAddr is where replies went (the confirmed client address); the
	// zero value (written as "") if there was none.
	ClientAddr netip.AddrPort `json:"client_addr"`
	// UpstreamLocal is the session's upstream socket address: the port
	// that is re-bound.
	UpstreamLocal netip.AddrPort `json:"upstream_local"`
	// Upstream is the upstream address the socket was connected to, and
	// UpstreamConfig the configured upstream endpoint ("host:port") it
	// belonged to, the relay's upstream or one of its pool; a session is
	// restored only into a relay that still has that endpoint.
	Upstream       netip.AddrPort `json:"upstream"`
	UpstreamConfig string         `json:"upstream_config"`
	Created        time.Time      `json:"created"`
	// Roam is the session's roaming state (learned indexes), opaque here.
	Roam json.RawMessage `json:"roam,omitempty"`
	// Listen is the listening socket its replies left by, as configured
	// (the roaming state numbers it by its place in the listen list): a
	// start with another list finds it by address. Files from before it
	// was saved have none, and keep the number.
	Listen netip.AddrPort `json:"listen,omitzero"`
}

// New returns an empty state.
func New() *File {
	return &File{Format: magic, Version: Version, Relays: map[string][]Session{}}
}

// CorruptError says the file at Path exists but cannot be used as a state
// file: it cannot be read, is not a regular file, is larger than the limit,
// or is not a udpfwd state file of this version. Load's caller should move
// it aside with Quarantine and start empty.
type CorruptError struct {
	Path string
	Err  error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("state file %s cannot be used: %v", e.Path, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Load reads the state file at path. A missing file is an empty state.
// Every other failure is a *CorruptError: a file that is not a regular file
// (see the package documentation), is larger than limit bytes (see
// SizeLimit), cannot be read, or is not a udpfwd state file of this
// version. Load never blocks on the file and reads at most limit+1 bytes.
func Load(path string, limit int64) (*File, error) {
	f, err := openRegular(path)
	if errors.Is(err, fs.ErrNotExist) {
		return New(), nil
	}
	if err != nil {
		return nil, &CorruptError{Path: path, Err: err}
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > limit {
		return nil, &CorruptError{Path: path, Err: tooLarge(fi.Size(), limit)}
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, &CorruptError{Path: path, Err: fmt.Errorf("cannot be read: %w", plainErr(err))}
	}
	if int64(len(b)) > limit {
		return nil, &CorruptError{Path: path, Err: tooLarge(int64(len(b)), limit)}
	}
	var sf File
	if err := json.Unmarshal(b, &sf); err != nil {
		return nil, &CorruptError{Path: path, Err: fmt.Errorf("not a udpfwd state file: %w", err)}
	}
	if sf.Format != magic {
		return nil, &CorruptError{Path: path, Err: fmt.Errorf("format %q, want %q", sf.Format, magic)}
	}
	if sf.Version != Version {
		return nil, &CorruptError{Path: path, Err: fmt.Errorf("version %d, want %d", sf.Version, Version)}
	}
	if sf.Relays == nil {
		sf.Relays = map[string][]Session{}
	}
	return &sf, nil
}

func tooLarge(size, limit int64) error {
	return fmt.Errorf("%d bytes or more, over the limit of %d bytes that the session cap allows", size, limit)
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
// the new name. It never deletes anything, and it moves whatever is at path
// as it is: a symbolic link is moved, not what it points to.
func Quarantine(path string, now time.Time) (string, error) {
	aside := fmt.Sprintf("%s.bad-%s", path, now.UTC().Format("20060102T150405.000000000Z"))
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("move bad state file aside: %w", plainErr(err))
	}
	return aside, nil
}
