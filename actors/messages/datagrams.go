package messages

import "github.com/udpfwd/udpfwd/internal/udpio"

// Datagrams returns the batch a datagram-carrying message (ClientDatagrams,
// UpstreamDatagrams, ClientReplies) holds, or nil for any other message:
// for code that treats them alike, such as a bounded mailbox weighing and
// dropping them, or the count of dead letters.
func Datagrams(m any) *udpio.Batch {
	switch m := m.(type) {
	case *ClientDatagrams:
		return m.Batch()
	case *UpstreamDatagrams:
		return m.Batch()
	case *ClientReplies:
		return m.Batch()
	}
	return nil
}

// Footprint weighs a message for a bounded mailbox: the memory a
// datagram-carrying message holds (udpio.Batch.Footprint), zero for any
// other message, which is then never dropped.
func Footprint(m any) int {
	if b := Datagrams(m); b != nil {
		return b.Footprint()
	}
	return 0
}
