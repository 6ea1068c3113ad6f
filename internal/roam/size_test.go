package roam

import (
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// A Peer is part of every session, idle ones included: it stays small.
// (232 bytes, and 64 more for the highest transport counter of each
// learned index, FromTransport's rule.)
func TestPeerSize(t *testing.T) {
	if size := unsafe.Sizeof(Peer{}); size > 296 {
		t.Errorf("a Peer takes %d bytes, want at most 296", size)
	}
}

// The pending table's overflow exists only while a second initiation is
// pending: a response takes it back, and so does Trim once the initiations
// in it have expired.
func TestPendingOverflow(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	a := netip.MustParseAddrPort("192.0.2.1:1000")
	b := netip.MustParseAddrPort("192.0.2.1:2000")
	ini := func(i uint32) wgproto.Header { return wgproto.Header{Type: wgproto.TypeInitiation, Index: i} }
	resp := func(s, r uint32) wgproto.Header {
		return wgproto.Header{Type: wgproto.TypeResponse, Index: s, Receiver: r}
	}

	var p Peer
	p.FromClient(now, ini(1), a, 0)
	if p.more != nil {
		t.Fatal("one pending initiation allocated the overflow")
	}
	p.FromClient(now, ini(2), b, 0)
	if p.more == nil {
		t.Fatal("a second pending initiation has no place")
	}
	p.FromUpstream(now, resp(7, 2))
	if p.more != nil {
		t.Fatal("the overflow outlived its one initiation's response")
	}
	if p.Addr() != b {
		t.Fatalf("the response to b's initiation moved the session to %v", p.Addr())
	}

	p.FromClient(now, ini(3), a, 0)
	p.FromClient(now, ini(4), b, 0) // b's entry is 0 or 1: either way a takes the other
	p.FromClient(now, ini(5), netip.MustParseAddrPort("198.51.100.7:3000"), 0)
	if p.more == nil {
		t.Fatal("three pending initiations and no overflow")
	}
	p.Trim(now.Add(PendingMaxAge - time.Millisecond))
	if p.more == nil {
		t.Fatal("Trim dropped initiations that are still live")
	}
	p.Trim(now.Add(PendingMaxAge))
	if p.more != nil || p.pending0.used {
		t.Fatal("Trim kept expired initiations")
	}
}
