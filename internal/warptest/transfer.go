package warptest

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// progressPoll is how often waits look at a transfer's progress.
const progressPoll = 10 * time.Millisecond

// Transfer is a verified download or upload running in the background
// ([Client.Download], [Client.Upload]). Its byte count moves as the data does,
// so a caller can act at chosen points ([Transfer.WaitBytes]) and tell a
// completed stream from a stalled one ([Transfer.Wait]).
type Transfer struct {
	kind   string
	size   int64
	start  time.Time
	bytes  atomic.Int64
	cancel context.CancelFunc
	done   chan struct{}

	// Set before done is closed.
	err     error
	elapsed time.Duration
}

// Result is a completed transfer.
type Result struct {
	Bytes   int64
	Elapsed time.Duration
}

// Mbps is the transfer's rate in megabits per second.
func (r Result) Mbps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / r.Elapsed.Seconds() / 1e6
}

// StallError says that a transfer made no progress for a while and was given
// up.
type StallError struct {
	Kind  string
	Bytes int64 // verified (download) or sent (upload) when it stalled
	Size  int64
	Idle  time.Duration // how long it had made no progress
}

// Percent is how far the transfer got, 0..100.
func (e *StallError) Percent() float64 {
	if e.Size == 0 {
		return 100
	}
	return float64(e.Bytes) * 100 / float64(e.Size)
}

func (e *StallError) Error() string {
	return fmt.Sprintf("warptest: %s stalled at %d of %d bytes (%.0f %%): no progress for %v",
		e.Kind, e.Bytes, e.Size, e.Percent(), e.Idle.Round(time.Millisecond))
}

func (t *Transfer) finish(err error) {
	t.err = err
	t.elapsed = time.Since(t.start)
	close(t.done)
}

// Kind is "download" or "upload".
func (t *Transfer) Kind() string { return t.kind }

// Size is the number of bytes asked for.
func (t *Transfer) Size() int64 { return t.size }

// Bytes is how many bytes have been verified (download) or sent (upload) so far.
func (t *Transfer) Bytes() int64 { return t.bytes.Load() }

// Done is closed when the transfer has ended, for good or not.
func (t *Transfer) Done() <-chan struct{} { return t.done }

// Err is the transfer's outcome once Done is closed: nil if every byte
// arrived intact.
func (t *Transfer) Err() error {
	<-t.done
	return t.err
}

// Cancel stops the transfer and waits until it has ended.
func (t *Transfer) Cancel() {
	t.cancel()
	<-t.done
}

// WaitBytes waits until at least n bytes have moved. If the transfer makes no
// progress for stall first (zero: no limit), WaitBytes cancels it and returns
// a *StallError. It also fails if the transfer ends short of n or ctx ends.
func (t *Transfer) WaitBytes(ctx context.Context, n int64, stall time.Duration) error {
	return t.waitFor(ctx, n, stall)
}

// Wait waits for the transfer to end. If it makes no progress for stall (zero:
// no limit), Wait cancels it and returns a *StallError; if ctx ends first, it
// cancels it and returns ctx's error.
func (t *Transfer) Wait(ctx context.Context, stall time.Duration) (Result, error) {
	if err := t.waitFor(ctx, -1, stall); err != nil {
		return Result{Bytes: t.Bytes(), Elapsed: t.elapsed}, err
	}
	return Result{Bytes: t.size, Elapsed: t.elapsed}, nil
}

// waitFor waits until n bytes have moved or, for n < 0, until the end.
func (t *Transfer) waitFor(ctx context.Context, n int64, stall time.Duration) error {
	tick := time.NewTicker(progressPoll)
	defer tick.Stop()
	last, lastMove := t.Bytes(), time.Now()
	for {
		if n >= 0 && t.Bytes() >= n {
			return nil
		}
		select {
		case <-t.done:
			switch {
			case n < 0 || t.Bytes() >= n:
				return t.err
			case t.err != nil:
				return fmt.Errorf("warptest: %s ended at %d bytes, before %d: %w", t.kind, t.Bytes(), n, t.err)
			default:
				return fmt.Errorf("warptest: %s ended at %d bytes, before %d", t.kind, t.Bytes(), n)
			}
		case <-ctx.Done():
			t.Cancel()
			return fmt.Errorf("warptest: %s at %d of %d bytes: %w", t.kind, t.Bytes(), t.size, ctx.Err())
		case now := <-tick.C:
			if b := t.Bytes(); b != last {
				last, lastMove = b, now
			} else if idle := now.Sub(lastMove); stall > 0 && idle >= stall {
				t.Cancel()
				return &StallError{Kind: t.kind, Bytes: last, Size: t.size, Idle: idle}
			}
		}
	}
}
