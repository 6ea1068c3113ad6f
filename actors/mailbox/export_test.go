package mailbox

// SetTestHooks installs the test hooks and returns a function that removes
// them. Install them before the goroutines that use the mailbox start.
func SetTestHooks(afterPush, beforeIdle func()) (restore func()) {
	testHookAfterPush, testHookBeforeIdle = afterPush, beforeIdle
	return func() { testHookAfterPush, testHookBeforeIdle = nil, nil }
}
