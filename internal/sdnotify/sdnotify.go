// Package sdnotify tells systemd about the service's state through the
// notification socket, so that a Type=notify unit is "active" only once
// every relay socket is bound, and "reloading" while a SIGHUP is applied.
//
// It implements the sd_notify(3) protocol without libsystemd: one unix
// datagram of newline-separated KEY=VALUE assignments sent to the socket
// named by $NOTIFY_SOCKET (a path, or "@name" in the abstract namespace).
// Without $NOTIFY_SOCKET, as when not started by systemd, every call does
// nothing and returns nil.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Ready tells systemd that start-up, or a reload begun with Reloading, is
// complete: the listening sockets are bound and the service is serving.
func Ready() error { return Notify("READY=1") }

// Reloading tells systemd that a configuration reload has begun; call
// Ready when it is done. The message carries MONOTONIC_USEC, which
// Type=notify-reload units (systemd 253 and later) require.
func Reloading() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return fmt.Errorf("sdnotify: read the monotonic clock: %w", err)
	}
	usec := ts.Nano() / 1000
	return Notify("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(usec, 10))
}

// Stopping tells systemd that the service is shutting down (saving state
// and closing sockets), so that it does not count the exit as a failure
// in progress.
func Stopping() error { return Notify("STOPPING=1") }

// Notify sends state, one or more newline-separated assignments such as
// "STATUS=3 relays, 120 sessions", to $NOTIFY_SOCKET. It does nothing when
// the variable is unset or empty.
func Notify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if !strings.HasPrefix(name, "/") && !strings.HasPrefix(name, "@") {
		return fmt.Errorf("sdnotify: NOTIFY_SOCKET %q: only unix socket paths and @abstract names are supported", name)
	}
	// Package net maps a leading '@' to the abstract namespace (a leading
	// NUL byte) on Linux.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sdnotify: send %q: %w", firstLine(state), err)
	}
	return nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
