package sdnotify_test

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/udpfwd/udpfwd/internal/sdnotify"
)

// listen opens a unix datagram socket standing in for systemd's and points
// NOTIFY_SOCKET at it.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return c
}

// receive reads one notification, waiting at most 30 s: generous, since
// only a failing test waits it out.
func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func monotonicUsec(t *testing.T) int64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

func TestMessages(t *testing.T) {
	for _, socket := range []struct{ name, addr string }{
		{"path", filepath.Join(t.TempDir(), "notify.sock")},
		{"abstract", fmt.Sprintf("@udpfwd-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano())},
	} {
		t.Run(socket.name, func(t *testing.T) {
			c := listen(t, socket.addr)
			if strings.HasPrefix(socket.addr, "@") {
				// Abstract: no file of that name appears.
				if _, err := os.Stat(socket.addr); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("%s exists as a file (%v): not the abstract namespace", socket.addr, err)
				}
			}
			tests := []struct {
				name string
				send func() error
				want string
			}{
				{"ready", sdnotify.Ready, "READY=1"},
				{"stopping", sdnotify.Stopping, "STOPPING=1"},
				{"status", func() error { return sdnotify.Notify("STATUS=2 relays") }, "STATUS=2 relays"},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					if err := tt.send(); err != nil {
						t.Fatal(err)
					}
					if got := receive(t, c); got != tt.want {
						t.Fatalf("systemd got %q, want %q", got, tt.want)
					}
				})
			}
			t.Run("reloading", func(t *testing.T) {
				before := monotonicUsec(t)
				if err := sdnotify.Reloading(); err != nil {
					t.Fatal(err)
				}
				after := monotonicUsec(t)
				got := receive(t, c)
				first, stamp, ok := strings.Cut(got, "\n")
				if !ok || first != "RELOADING=1" || !strings.HasPrefix(stamp, "MONOTONIC_USEC=") {
					t.Fatalf("systemd got %q, want RELOADING=1 and MONOTONIC_USEC=", got)
				}
				usec, err := strconv.ParseInt(strings.TrimPrefix(stamp, "MONOTONIC_USEC="), 10, 64)
				if err != nil || usec < before || usec > after {
					t.Fatalf("MONOTONIC_USEC %q not within [%d, %d] (%v)", stamp, before, after, err)
				}
			})
		})
	}
}

func TestWithoutNotifySocketIsNoOp(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	tests := []struct {
		name string
		send func() error
	}{{"Ready", sdnotify.Ready}, {"Reloading", sdnotify.Reloading}, {"Stopping", sdnotify.Stopping}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.send(); err != nil {
				t.Fatalf("%s without NOTIFY_SOCKET: %v, want nil", tt.name, err)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name, socket, want string
		is                 error
	}{
		{"unsupported address", "vsock:2:1234", "only unix socket paths and @abstract names", nil},
		{"no such socket", filepath.Join(t.TempDir(), "missing.sock"), "sdnotify: ", fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NOTIFY_SOCKET", tt.socket)
			err := sdnotify.Ready()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Ready: %v, want an error containing %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("Ready: %v, want it to wrap %v", err, tt.is)
			}
		})
	}
}
