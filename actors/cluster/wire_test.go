package cluster

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/proto"

	"github.com/udpfwd/udpfwd/actors/cluster/clusterpb"
	"github.com/udpfwd/udpfwd/internal/racecheck"
	"github.com/udpfwd/udpfwd/internal/udpio"
)

func TestWireRoundTrip(t *testing.T) {
	addrs := []netip.AddrPort{
		netip.MustParseAddrPort("198.51.100.7:50000"),
		netip.MustParseAddrPort("[2001:db8::7]:1"),
		netip.MustParseAddrPort("[::ffff:198.51.100.8]:65535"), // a v4-mapped v6 address stays v6
		netip.MustParseAddrPort("127.0.0.1:0"),
	}
	sizes := []int{0, 1, 32, 148, 1452, udpio.BufferSize}
	b := udpio.GetBatch()
	for i := range udpio.MaxBatch {
		buf := udpio.GetBuffer()
		n := sizes[i%len(sizes)]
		for j := range n {
			buf[j] = byte(i + j)
		}
		b.Add(udpio.Datagram{Buf: buf, N: n, Addr: addrs[i%len(addrs)]})
	}
	b.Datagrams[5].Truncated = true // never forwarded
	m := &clusterpb.Batch{}
	if n := encodeBatch(m, b); n != udpio.MaxBatch-1 {
		t.Fatalf("encoded %d datagrams, want %d", n, udpio.MaxBatch-1)
	}
	// Through protobuf, as remote sends it.
	wire, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var back clusterpb.Batch
	if err := proto.Unmarshal(wire, &back); err != nil {
		t.Fatal(err)
	}
	out, err := decodeBatch(&back)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	j := 0
	for i := range b.Datagrams {
		if b.Datagrams[i].Truncated {
			continue
		}
		in, got := &b.Datagrams[i], &out.Datagrams[j]
		if got.Addr != in.Addr || string(got.Bytes()) != string(in.Bytes()) {
			t.Fatalf("datagram %d: %v %d bytes, want %v %d bytes", i, got.Addr, got.N, in.Addr, in.N)
		}
		j++
	}
	if j != len(out.Datagrams) {
		t.Fatalf("decoded %d datagrams, want %d", len(out.Datagrams), j)
	}
	b.Release()
}

func TestWireMalformed(t *testing.T) {
	valid := func() *clusterpb.Batch {
		m := &clusterpb.Batch{}
		encodeBatch(m, batchOf(netip.MustParseAddrPort("198.51.100.7:50000"), make([]byte, 10), make([]byte, 20)))
		return m
	}
	tests := []struct {
		name   string
		mangle func(m *clusterpb.Batch)
	}{
		{"odd lengths", func(m *clusterpb.Batch) { m.Lens = m.Lens[:3] }},
		{"short addresses", func(m *clusterpb.Batch) { m.Addrs = m.Addrs[:addrSize] }},
		{"short payloads", func(m *clusterpb.Batch) { m.Payloads = m.Payloads[:29] }},
		{"long payloads", func(m *clusterpb.Batch) { m.Payloads = append(m.Payloads, 0) }},
		{"oversized datagram", func(m *clusterpb.Batch) { m.Lens[0], m.Lens[1] = 0xff, 0xff }},
		{"too many datagrams", func(m *clusterpb.Batch) {
			m.Lens = make([]byte, (udpio.MaxBatch+1)*lenSize)
			m.Addrs = make([]byte, (udpio.MaxBatch+1)*addrSize)
			m.Payloads = nil
		}},
	}
	if b, err := decodeBatch(valid()); err != nil {
		t.Fatalf("the unmangled batch: %v", err)
	} else {
		b.Release()
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := valid()
			tt.mangle(m)
			if b, err := decodeBatch(m); err == nil {
				b.Release()
				t.Fatal("decoded a malformed batch")
			}
		})
	}
}

// TestWireAllocs guards the per-datagram cost of the conversion: decoding
// into pooled buffers allocates nothing; encoding allocates one buffer per
// batch, however many datagrams it holds.
func TestWireAllocs(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("sync.Pool drops items on purpose under -race")
	}
	in := batchOf(netip.MustParseAddrPort("198.51.100.7:50000"), payloads(udpio.MaxBatch, 200)...)
	defer in.Release()
	m := &clusterpb.Batch{}
	if n := testing.AllocsPerRun(100, func() { encodeBatch(m, in) }); n != 1 {
		t.Fatalf("encoding 64 datagrams allocates %v times, want 1", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		out, _ := decodeBatch(m)
		out.Release()
	}); n != 0 {
		t.Fatalf("decoding 64 datagrams allocates %v times, want 0", n)
	}
}

func payloads(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, size)
		out[i][0] = byte(i)
	}
	return out
}

// TestOwnersMatchRendezvous checks that the first owner is the member
// protoactor's Rendezvous picks, that the second is the first among the
// others, and that one member joining or leaving always leaves a key at
// least one of its two owners.
func TestOwnersMatchRendezvous(t *testing.T) {
	var ms []*cluster.Member
	for i := range 5 {
		ms = append(ms, &cluster.Member{Id: fmt.Sprint(i), Host: fmt.Sprintf("10.0.0.%d", i+1), Port: 7000, Kinds: []string{SessionKind}})
	}
	rdv := cluster.NewRendezvous()
	rdv.UpdateMembers(ms)
	v := newView(ms)
	for i := range 2000 {
		key := clientID(i).String()
		first, second := v.owners(key)
		if want := rdv.GetByClusterIdentity(cluster.NewClusterIdentity(key, SessionKind)); first != want {
			t.Fatalf("owners(%s) first = %s, Rendezvous picks %s", key, first, want)
		}
		var others []*cluster.Member
		for _, m := range ms {
			if m.Address() != first {
				others = append(others, m)
			}
		}
		if f, _ := newView(others).owners(key); second != f {
			t.Fatalf("owners(%s) second = %s, want %s", key, second, f)
		}
		for drop := range ms {
			without := append(append([]*cluster.Member(nil), ms[:drop]...), ms[drop+1:]...)
			f2, s2 := newView(without).owners(key)
			if f2 != first && f2 != second && s2 != first && s2 != second {
				t.Fatalf("key %s: owners %s,%s with all, %s,%s without %s: none shared", key, first, second, f2, s2, ms[drop].Address())
			}
		}
	}
	if f, s := (&view{}).owners("x"); f != "" || s != "" {
		t.Fatalf("owners with no members = %q, %q", f, s)
	}
	if f, s := newView(ms[:1]).owners("x"); f != ms[0].Address() || s != "" {
		t.Fatalf("owners with one member = %q, %q", f, s)
	}
}

func BenchmarkEncode64x200(b *testing.B) {
	in := batchOf(netip.MustParseAddrPort("198.51.100.7:50000"), payloads(udpio.MaxBatch, 200)...)
	defer in.Release()
	b.ReportAllocs()
	b.SetBytes(udpio.MaxBatch * 200)
	for b.Loop() {
		m := &clusterpb.Batch{}
		encodeBatch(m, in)
		if _, err := proto.Marshal(m); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*udpio.MaxBatch), "ns/datagram")
}

func BenchmarkDecode64x200(b *testing.B) {
	in := batchOf(netip.MustParseAddrPort("198.51.100.7:50000"), payloads(udpio.MaxBatch, 200)...)
	m := &clusterpb.Batch{}
	encodeBatch(m, in)
	in.Release()
	wire, _ := proto.Marshal(m)
	b.ReportAllocs()
	b.SetBytes(udpio.MaxBatch * 200)
	for b.Loop() {
		var back clusterpb.Batch
		if err := proto.Unmarshal(wire, &back); err != nil {
			b.Fatal(err)
		}
		out, err := decodeBatch(&back)
		if err != nil {
			b.Fatal(err)
		}
		out.Release()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*udpio.MaxBatch), "ns/datagram")
}
