package main

import (
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// A signal during start-up ends it at once, however long the start-up
// would take. (A signal that comes as the start-up ends, and is put back for
// the running daemon, is a race a test cannot arrange without a hook.)
func TestStartOrStop(t *testing.T) {
	t.Run("signal during start-up", func(t *testing.T) {
		sig := make(chan os.Signal, 2)
		release := make(chan struct{})
		defer close(release)
		sig <- syscall.SIGTERM
		done := make(chan error, 1)
		go func() {
			done <- startOrStop(sig, zaptest.NewLogger(t), func() error { <-release; return nil })
		}()
		select {
		case err := <-done:
			if !errors.Is(err, errStoppedStarting) {
				t.Fatalf("startOrStop = %v, want errStoppedStarting", err)
			}
		case <-time.After(waitTimeout):
			t.Fatal("a signal did not end a start-up that hangs")
		}
	})
	t.Run("start-up fails", func(t *testing.T) {
		want := errors.New("port in use")
		if err := startOrStop(make(chan os.Signal, 2), zaptest.NewLogger(t), func() error { return want }); err != want {
			t.Fatalf("startOrStop = %v, want %v", err, want)
		}
	})
}
