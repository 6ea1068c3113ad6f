package state_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/udpfwd/udpfwd/internal/roam"
	"github.com/udpfwd/udpfwd/internal/state"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

const limit = state.MinSizeLimit

// waitTimeout bounds every wait for something that should happen. It only
// costs time when a test fails, so it is generous: a -race run on two busy
// cores can be slow by seconds.
const waitTimeout = 30 * time.Second

func TestSaveLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	f := state.New()
	f.Saved = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	f.Relays["warp"] = []state.Session{{
		ID:            uuid.MustParse("6f0c5c1e-3f53-4b0a-9f4e-0c0f6b1b9a11"),
		Client:        wgproto.ClientID{0xa8, 0x1a, 0x15},
		ClientAddr:    netip.MustParseAddrPort("203.0.113.7:41000"),
		UpstreamLocal: netip.MustParseAddrPort("0.0.0.0:53123"),
		Upstream:      netip.MustParseAddrPort("162.159.192.1:2408"), UpstreamConfig: "engage.cloudflareclient.com:2408",
		Created: f.Saved, Roam: json.RawMessage(`{"indexes":[1,2]}`),
	}, {
		ID:            uuid.MustParse("00000000-0000-4000-8000-000000000001"),
		Client:        wgproto.ClientID{0, 0, 1},
		UpstreamLocal: netip.MustParseAddrPort("[::]:40000"),
		Upstream:      netip.MustParseAddrPort("[2606:4700:d0::a29f:c001]:2408"), UpstreamConfig: "[2606:4700:d0::a29f:c001]:2408",
		Created: f.Saved,
	}}
	if err := state.Save(path, f); err != nil {
		t.Fatal(err)
	}
	got, err := state.Load(path, limit)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(f)
	b, _ := json.Marshal(got)
	if string(a) != string(b) {
		t.Fatalf("round trip:\n%s\n%s", a, b)
	}
	s := got.Relays["warp"][0]
	if s.Client != (wgproto.ClientID{0xa8, 0x1a, 0x15}) || s.UpstreamLocal.Port() != 53123 || s.ID.String() != "6f0c5c1e-3f53-4b0a-9f4e-0c0f6b1b9a11" {
		t.Fatalf("typed fields read back as %+v", s)
	}
	if got.Relays["warp"][1].ClientAddr.IsValid() {
		t.Fatal("a session without a client address read back with one")
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("directory holds %d files, want only the state file", len(entries))
	}
}

// todaysFile is a state file as udpfwd wrote it while the fields were
// strings: it must load, field for field.
const todaysFile = `{
  "format": "udpfwd-state",
  "version": 1,
  "saved": "2026-11-24T12:00:00.123456789Z",
  "relays": {
    "warp": [
      {
        "id": "6f0c5c1e-3f53-4b0a-9f4e-0c0f6b1b9a11",
        "client": "a81a15",
        "client_addr": "[2001:db8::7]:41000",
        "upstream_local": "0.0.0.0:53123",
        "upstream": "162.159.192.1:2408",
        "upstream_config": "engage.cloudflareclient.com:2408",
        "created": "2026-11-24T11:00:00Z",
        "roam": {
          "addr": "[2001:db8::7]:41000",
          "via": 0,
          "answered": true,
          "indexes": [
            {
              "index": 305419896,
              "learned": "2026-11-24T11:59:00Z"
            }
          ]
        }
      },
      {
        "id": "00000000-0000-4000-8000-000000000001",
        "client": "000001",
        "client_addr": "",
        "upstream_local": "[::]:40000",
        "upstream": "[2606:4700:d0::a29f:c001]:2408",
        "upstream_config": "[2606:4700:d0::a29f:c001]:2408",
        "created": "2026-11-24T11:30:00Z"
      }
    ]
  }
}
`

func TestTodaysFormatLoads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, []byte(todaysFile), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := state.Load(path, limit)
	if err != nil {
		t.Fatal(err)
	}
	ss := f.Relays["warp"]
	if len(ss) != 2 {
		t.Fatalf("read %d sessions, want 2", len(ss))
	}
	want := state.Session{
		ID:             uuid.MustParse("6f0c5c1e-3f53-4b0a-9f4e-0c0f6b1b9a11"),
		Client:         wgproto.ClientID{0xa8, 0x1a, 0x15},
		ClientAddr:     netip.MustParseAddrPort("[2001:db8::7]:41000"),
		UpstreamLocal:  netip.MustParseAddrPort("0.0.0.0:53123"),
		Upstream:       netip.MustParseAddrPort("162.159.192.1:2408"),
		UpstreamConfig: "engage.cloudflareclient.com:2408",
		Created:        time.Date(2026, 11, 24, 11, 0, 0, 0, time.UTC),
	}
	got := ss[0]
	var r roam.State
	if err := json.Unmarshal(got.Roam, &r); err != nil || len(r.Indexes) != 1 || r.Indexes[0].Index != 305419896 {
		t.Fatalf("roaming state read back as %s (%v)", got.Roam, err)
	}
	got.Roam = nil
	if !got.Created.Equal(want.Created) {
		t.Fatalf("created %v, want %v", got.Created, want.Created)
	}
	got.Created = want.Created
	if got.ID != want.ID || got.Client != want.Client || got.ClientAddr != want.ClientAddr ||
		got.UpstreamLocal != want.UpstreamLocal || got.Upstream != want.Upstream || got.UpstreamConfig != want.UpstreamConfig {
		t.Fatalf("session read as\n%+v\nwant\n%+v", got, want)
	}
	if ss[1].ClientAddr.IsValid() || ss[1].Client != (wgproto.ClientID{0, 0, 1}) {
		t.Fatalf("second session read as %+v", ss[1])
	}
	// Written again, the file says the same (the same JSON as before).
	out := filepath.Join(t.TempDir(), "again.json")
	if err := state.Save(out, f); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	if string(b) != todaysFile {
		t.Fatalf("written again as\n%s\nwant\n%s", b, todaysFile)
	}
}

func TestLoadMissingIsEmpty(t *testing.T) {
	f, err := state.Load(filepath.Join(t.TempDir(), "none.json"), limit)
	if err != nil || len(f.Relays) != 0 {
		t.Fatalf("Load of a missing file = %v, %v; want an empty state", f, err)
	}
}

// loadBounded runs Load and fails the test if it does not return in time:
// a state file must never block the relay.
func loadBounded(t *testing.T, path string, limit int64) (*state.File, error) {
	t.Helper()
	type result struct {
		f   *state.File
		err error
	}
	done := make(chan result, 1)
	go func() {
		f, err := state.Load(path, limit)
		done <- result{f, err}
	}()
	select {
	case r := <-done:
		return r.f, r.err
	case <-time.After(waitTimeout):
		t.Fatalf("Load(%s) blocked", path)
		return nil, nil
	}
}

// Whatever is at the path, Load returns at once: a file it cannot use is a
// *CorruptError, and Quarantine moves it aside as it is.
func TestRefusedFiles(t *testing.T) {
	// fill is a state file with one session of these addresses.
	fill := func(clientAddr, local, up string) string {
		return fmt.Sprintf(`{"format":"udpfwd-state","version":1,"relays":{"warp":[{"id":"6f0c5c1e-3f53-4b0a-9f4e-0c0f6b1b9a11",`+
			`"client":"a81a15","client_addr":%q,"upstream_local":%q,"upstream":%q,"upstream_config":"x:1","created":"2026-11-24T11:00:00Z"}]}}`,
			clientAddr, local, up)
	}
	for _, tt := range []struct {
		name   string
		make   func(t *testing.T, path string) // puts something at path
		reason string                          // part of the error
	}{
		{"garbage", content("\x00\x01not json"), "not a udpfwd state file"},
		{"truncated", content(`{"format":"udpfwd-state","version":1,"relays":{`), "not a udpfwd state file"},
		{"foreign json", content(`{"hello":"world"}`), "format"},
		{"other version", content(`{"format":"udpfwd-state","version":99,"relays":{}}`), "version 99"},
		{"bad client address", content(fill("999.0.0.1:80", "0.0.0.0:1", "127.0.0.1:2")), "999.0.0.1"},
		{"bad upstream local address", content(fill("", "0.0.0.0", "127.0.0.1:2")), "ip:port"},
		{"bad upstream address", content(fill("", "0.0.0.0:1", "upstream.example:2408")), "upstream.example"},
		{"bad client ID", content(strings.Replace(fill("", "0.0.0.0:1", "127.0.0.1:2"), "a81a15", "qBoV", 1)), "qBoV"},
		{"bad session ID", content(strings.Replace(fill("", "0.0.0.0:1", "127.0.0.1:2"), "6f0c5c1e-", "6f0c5c1e+", 1)), "UUID"},
		{"FIFO", func(t *testing.T, path string) {
			if err := unix.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "named pipe"},
		{"symlink to /dev/zero", func(t *testing.T, path string) {
			if err := os.Symlink("/dev/zero", path); err != nil {
				t.Fatal(err)
			}
		}, "symbolic link"},
		{"symlink to a good file", func(t *testing.T, path string) {
			good := filepath.Join(t.TempDir(), "good.json")
			if err := state.Save(good, state.New()); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(good, path); err != nil {
				t.Fatal(err)
			}
		}, "symbolic link"},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "directory"},
		{"oversized", content(`{"format":"udpfwd-state","version":1,"relays":{}}` + strings.Repeat(" ", limit)), "over the limit"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			tt.make(t, path)
			before, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = loadBounded(t, path, limit)
			var ce *state.CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("Load = %v, want a *CorruptError", err)
			}
			if !strings.Contains(err.Error(), tt.reason) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q does not say %q in one line", err, tt.reason)
			}
			aside, err := state.Quarantine(path, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			after, err := os.Lstat(aside)
			if err != nil || !os.SameFile(before, after) {
				t.Fatalf("what was at the path was not moved aside as it was: %v", err)
			}
			if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("the bad file is still in place")
			}
		})
	}
}

func content(s string) func(*testing.T, string) {
	return func(t *testing.T, path string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// A file of exactly the limit is read; one byte more is not.
func TestSizeLimitBoundary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	head := `{"format":"udpfwd-state","version":1,"relays":{}}`
	content(head+strings.Repeat(" ", limit-len(head)))(t, path)
	if _, err := state.Load(path, limit); err != nil {
		t.Fatalf("a file of exactly the limit: %v", err)
	}
	if _, err := state.Load(path, limit-1); err == nil {
		t.Fatal("a file one byte over the limit was read")
	}
	if state.SizeLimit(0) != state.MinSizeLimit || state.SizeLimit(1_000_000) != 1_000_000*state.BytesPerSession {
		t.Fatalf("SizeLimit(0) = %d, SizeLimit(1e6) = %d", state.SizeLimit(0), state.SizeLimit(1_000_000))
	}
}

// The largest session Save can write fits in BytesPerSession, so a file
// written for N sessions always fits in SizeLimit(N).
func TestBytesPerSessionBound(t *testing.T) {
	addr := netip.MustParseAddrPort("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%some-long-zone-name]:65535")
	r := roam.State{Addr: addr, Listener: 255, Answered: true}
	for i := range roam.MaxIndexes {
		r.Indexes = append(r.Indexes, roam.LearnedIndex{Index: 4294967295 - uint32(i), Learned: time.Date(2026, 11, 24, 11, 59, 59, 999999999, time.FixedZone("", -12*3600))})
	}
	rb, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	s := state.Session{
		ID: uuid.New(), Client: wgproto.ClientID{0xff, 0xff, 0xff}, ClientAddr: addr, UpstreamLocal: addr, Upstream: addr,
		UpstreamConfig: strings.Repeat("a", 253) + ":65535", Created: r.Indexes[0].Learned, Roam: rb,
	}
	one, two := state.New(), state.New()
	one.Relays["r"] = []state.Session{s}
	two.Relays["r"] = []state.Session{s, s}
	a, _ := json.MarshalIndent(one, "", "  ")
	b, _ := json.MarshalIndent(two, "", "  ")
	per := len(b) - len(a)
	t.Logf("largest session: %d bytes", per)
	if per > state.BytesPerSession/2 {
		t.Fatalf("one session takes %d bytes; BytesPerSession (%d) should be twice that", per, state.BytesPerSession)
	}
}

// One process holds the lock; a second claim fails and names the holder's
// PID; once released, it can be taken again.
func TestLockHeldTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	l, err := state.Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(state.LockPath(path)); strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("lock file holds %q, want this process's PID", b)
	}
	_, err = state.Acquire(path)
	var le *state.LockedError
	if !errors.As(err, &le) || le.PID != os.Getpid() {
		t.Fatalf("second Acquire = %v, want a *LockedError naming pid %d", err, os.Getpid())
	}
	if !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("error %q does not name the PID", err)
	}
	l.Release()
	l.Release() // twice is fine
	l2, err := state.Acquire(path)
	if err != nil {
		t.Fatalf("after Release: %v", err)
	}
	l2.Release()
}

// The lock file must be a regular file too, and a FIFO there does not
// block.
func TestLockFileMustBeRegular(t *testing.T) {
	for _, tt := range []struct {
		name, reason string
		make         func(string) error
	}{
		{"symlink", "symbolic link", func(p string) error { return os.Symlink("/dev/null", p) }},
		{"FIFO", "named pipe", func(p string) error { return unix.Mkfifo(p, 0o600) }},
		{"directory", "directory", func(p string) error { return os.Mkdir(p, 0o700) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			if err := tt.make(state.LockPath(path)); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				l, err := state.Acquire(path)
				l.Release()
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tt.reason) {
					t.Fatalf("Acquire = %v, want refused: %s", err, tt.reason)
				}
			case <-time.After(waitTimeout):
				t.Fatal("Acquire blocked")
			}
		})
	}
}

func TestCheckDir(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	content("x")(t, notDir)
	for _, tt := range []struct{ name, path, want string }{
		{"writable", filepath.Join(dir, "state.json"), ""},
		{"missing", filepath.Join(dir, "nope", "state.json"), "does not exist"},
		{"not a directory", filepath.Join(notDir, "state.json"), "not a directory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := state.CheckDir(tt.path)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CheckDir = %v, want %q", err, tt.want)
			}
		})
	}
}
