package mailbox

// WithTestHooks makes the mailbox call afterPush in a sender between
// queueing and counting its message, and beforeIdle in the processing
// goroutine just before it goes idle.
func WithTestHooks(afterPush, beforeIdle func()) Option {
	return func(m *Mailbox) { m.testAfterPush, m.testBeforeIdle = afterPush, beforeIdle }
}
