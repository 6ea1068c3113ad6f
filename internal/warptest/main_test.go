package warptest

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// testTimeout bounds a whole test; transfers that stop moving are caught
// sooner, by their stall bound. It only ends a test that hangs, so it
// leaves a busy machine all the time a transfer needs.
const testTimeout = 3 * time.Minute

// waitTimeout bounds every wait for something that should happen. It only
// costs time when a test fails, so it is generous: a -race run on two busy
// cores can be slow by seconds.
const waitTimeout = 30 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
