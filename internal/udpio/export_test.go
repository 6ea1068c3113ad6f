package udpio

// Messages returns how many messages (each one datagram, or a GSO run of
// them) WriteBatch has handed to the kernel.
func (c *Conn) Messages() uint64 { return c.messages }

// GSO reports whether WriteBatch may send GSO runs.
func (c *Conn) GSO() bool { return c.gso }
