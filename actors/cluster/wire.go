package cluster

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/udpfwd/udpfwd/actors/cluster/clusterpb"
	"github.com/udpfwd/udpfwd/internal/udpio"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Wire layout of a Batch's per-datagram fields (see clusterpb/udpfwd_cluster.proto): a 2-byte
// little-endian length and a 19-byte address record per datagram, so that a
// batch is three byte strings rather than 64 nested messages, and neither
// end allocates per datagram.
const (
	lenSize  = 2
	addrSize = 19 // family (4 or 6), 16 address bytes, port big-endian
)

// errMalformed reports a Batch whose fields disagree; the receiver drops it.
var errMalformed = errors.New("malformed datagram batch")

// putAddr writes a's record into dst[:addrSize].
func putAddr(dst []byte, a netip.AddrPort) {
	ip := a.Addr()
	dst[0] = 6
	if ip.Is4() {
		dst[0] = 4
	}
	b := ip.As16()
	copy(dst[1:17], b[:])
	binary.BigEndian.PutUint16(dst[17:19], a.Port())
}

// getAddr reads an address record written by putAddr.
func getAddr(src []byte) netip.AddrPort {
	ip := netip.AddrFrom16([16]byte(src[1:17]))
	if src[0] == 4 {
		ip = ip.Unmap()
	}
	return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(src[17:19]))
}

// encodeBatch fills m's datagram fields from b with one allocation for all
// three byte strings. Truncated datagrams are skipped (the relay never
// forwards them). It returns the number of datagrams encoded. b is not
// changed; the caller releases it.
func encodeBatch(m *clusterpb.Batch, b *udpio.Batch) int {
	n, total := 0, 0
	for i := range b.Datagrams {
		if !b.Datagrams[i].Truncated {
			n++
			total += b.Datagrams[i].N
		}
	}
	buf := make([]byte, n*(lenSize+addrSize)+total)
	lens, addrs, payloads := buf[:n*lenSize], buf[n*lenSize:n*(lenSize+addrSize)], buf[n*(lenSize+addrSize):]
	j, off := 0, 0
	for i := range b.Datagrams {
		d := &b.Datagrams[i]
		if d.Truncated {
			continue
		}
		binary.LittleEndian.PutUint16(lens[j*lenSize:], uint16(d.N))
		putAddr(addrs[j*addrSize:], d.Addr)
		off += copy(payloads[off:], d.Buf[:d.N])
		j++
	}
	m.Lens, m.Addrs, m.Payloads = lens, addrs, payloads
	return n
}

// decodeBatch moves m's datagrams into a pooled batch with pooled buffers:
// no allocation per datagram. The caller owns the batch.
func decodeBatch(m *clusterpb.Batch) (*udpio.Batch, error) {
	if len(m.Lens)%lenSize != 0 {
		return nil, errMalformed
	}
	n := len(m.Lens) / lenSize
	if n > udpio.MaxBatch || len(m.Addrs) != n*addrSize {
		return nil, errMalformed
	}
	total := 0
	for i := 0; i < n; i++ {
		l := int(binary.LittleEndian.Uint16(m.Lens[i*lenSize:]))
		if l > udpio.BufferSize {
			return nil, errMalformed
		}
		total += l
	}
	if total != len(m.Payloads) {
		return nil, errMalformed
	}
	b := udpio.GetBatch()
	off := 0
	for i := 0; i < n; i++ {
		l := int(binary.LittleEndian.Uint16(m.Lens[i*lenSize:]))
		buf := udpio.GetBuffer()
		copy(buf[:l], m.Payloads[off:off+l])
		off += l
		b.Add(udpio.Datagram{Buf: buf, N: l, Addr: getAddr(m.Addrs[i*addrSize:])})
	}
	return b, nil
}

// clientOf reads a 3-byte client ID field; a wrong length gives the zero ID,
// which no session has.
func clientOf(b []byte) wgproto.ClientID {
	var id wgproto.ClientID
	if len(b) == len(id) {
		copy(id[:], b)
	}
	return id
}

// listenOf reads the listening-address record of a Batch.
func listenOf(b []byte) netip.AddrPort {
	if len(b) != addrSize {
		return netip.AddrPort{}
	}
	return getAddr(b)
}
