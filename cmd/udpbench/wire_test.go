package main

import (
	"encoding/binary"
	"testing"
)

func TestClientIDsDistinctNonZero(t *testing.T) {
	seen := make(map[clientID]int, maxClients+1)
	for i := 0; i <= maxClients; i++ { // includes probeIndex
		id := clientIDFor(i)
		if id == (clientID{}) {
			t.Fatalf("client %d has the zero ID", i)
		}
		if j, dup := seen[id]; dup {
			t.Fatalf("clients %d and %d share ID %s", j, i, id)
		}
		seen[id] = i
	}
}

func TestValidateSize(t *testing.T) {
	tests := []struct {
		name string
		n    int
		ok   bool
	}{
		{"keepalive size", 32, true},
		{"64", 64, true},
		{"208", 208, true},
		{"1392", 1392, true},
		{"largest", maxTransportLen, true},
		{"too small", 16, false},
		{"not a multiple of 16", 100, false},
		{"zero", 0, false},
		{"negative", -32, false},
		{"too large", maxTransportLen + 16, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := validateSize(tt.n); (err == nil) != tt.ok {
				t.Errorf("validateSize(%d) = %v, want ok %v", tt.n, err, tt.ok)
			}
		})
	}
}

func TestInitiationShape(t *testing.T) {
	id := clientIDFor(3)
	b := make([]byte, initiationSize)
	putInitiation(b, id, 77)
	if b[0] != msgInitiation || b[1] != id[0] || b[2] != id[1] || b[3] != id[2] {
		t.Errorf("header % x, want type 1 and ID %s", b[:4], id)
	}
	if binary.LittleEndian.Uint32(b[4:]) != 77 {
		t.Errorf("sender index %d, want 77", binary.LittleEndian.Uint32(b[4:]))
	}
	if !isInitiationFrom(b, id) || isInitiationFrom(b, clientIDFor(4)) || isInitiationFrom(b[:147], id) {
		t.Error("isInitiationFrom: wrong answer for own, other ID or short datagram")
	}
}

func TestTransportRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		size int
	}{
		{"keepalive size", 32},
		{"64", 64},
		{"1392", 1392},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := clientIDFor(9)
			b := make([]byte, tt.size)
			putTransportHeader(b, id, 5)
			setTransportSeq(b, 1<<40+3, 123456789)
			if b[0] != msgTransport || binary.LittleEndian.Uint64(b[offCounter:]) != 1<<40+3 {
				t.Fatalf("type %d counter %d", b[0], binary.LittleEndian.Uint64(b[offCounter:]))
			}
			r, ok := parseTransport(b, tt.size)
			if !ok || r.id != id || r.epoch != 5 || r.seq != 1<<40+3 || r.stamp != 123456789 {
				t.Errorf("parse = %+v, %v", r, ok)
			}
			if _, ok := parseTransport(b, tt.size+16); ok {
				t.Error("parse accepted a datagram of the wrong length")
			}
			if isForeign(b, id) || !isForeign(b, clientIDFor(10)) {
				t.Error("isForeign: wrong answer")
			}
		})
	}
}
