package main

import (
	"errors"
	"os"

	"go.uber.org/zap"
)

// errStoppedStarting is startOrStop's answer when a signal came first.
var errStoppedStarting = errors.New("stopped during start-up")

// startOrStop runs start (taking the state file, binding sockets, starting
// relays) while listening to sig, so that SIGTERM or SIGINT stops udpfwd at
// any point of start-up, even if a step is slow (a name lookup, a file
// system). If a signal comes first it returns errStoppedStarting at once and
// start is left to the process's exit: nothing has been saved yet, so the
// state file keeps what it held. If start has just finished when the signal
// comes, the signal is put back for the running daemon's own clean stop.
func startOrStop(sig chan os.Signal, log *zap.Logger, start func() error) error {
	done := make(chan error, 1)
	go func() { done <- start() }()
	select {
	case err := <-done:
		return err
	case s := <-sig:
		select {
		case err := <-done:
			if err == nil {
				sig <- s // stop as a running daemon does
			}
			return err
		default:
		}
		log.Info("shutting down during start-up", zap.Stringer("signal", s))
		return errStoppedStarting
	}
}
