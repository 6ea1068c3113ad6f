package roam_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/roam"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// The fuzz input is a sequence of 4-byte events:
//
//	byte 0: who (mod fuzzWho: a client endpoint 0..fuzzEndpoints-1, the
//	        upstream, or a save-and-restore of the Peer's state) and the
//	        message type ((b/fuzzWho) mod 5; 0 is a header Parse never
//	        returns, as in forward mode)
//	byte 1: the index at bytes 4..7, from a small space so that guesses,
//	        collisions and matches are frequent
//	byte 2: the receiver index of a response, likewise
//	byte 3: how far the clock moves before the event (fuzzSteps)
const (
	fuzzEndpoints = 5 // A, B, C, A1 and one more
	fuzzUpstream  = fuzzEndpoints
	fuzzRestore   = fuzzEndpoints + 1
	fuzzWho       = fuzzEndpoints + 2
	fuzzIndexes   = 12
)

// fuzzSteps are the clock steps, chosen around the Peer's time limits.
var fuzzSteps = [...]time.Duration{
	0, 0, 0, 0, time.Millisecond, 100 * time.Millisecond, time.Second, 5 * time.Second,
	roam.PendingMaxAge - time.Millisecond, roam.PendingMaxAge, 30 * time.Second, 2 * time.Minute,
	roam.IndexMaxAge - time.Millisecond, roam.IndexMaxAge, roam.IndexMaxAge + time.Second, 10 * time.Minute,
}

// ev encodes one fuzz event.
func ev(who int, typ wgproto.Type, index, receiver uint32, step int) []byte {
	return []byte{byte(int(typ)*fuzzWho + who), byte(index), byte(receiver), byte(step)}
}

func evs(events ...[]byte) []byte {
	var b []byte
	for _, e := range events {
		b = append(b, e...)
	}
	return b
}

// fuzzModel is a model of which endpoints may legitimately receive this
// session's replies. It is deliberately generous (it never forgets an
// index or an initiation and ignores every bound), so it is a superset of
// what the Peer may do: the Peer must never send a reply outside it.
type fuzzModel struct {
	opened   bool
	answered bool // the upstream has sent a response: the rules apply
	legit    [fuzzEndpoints]bool
	learned  map[uint32]bool
	// inits[i] has bit k set if endpoint k sent an initiation with sender
	// index i.
	inits map[uint32]uint32
}

func FuzzPeer(f *testing.F) {
	const (
		a, b, c, a1, d = 0, 1, 2, 3, 4
		upstream       = fuzzUpstream
	)
	f.Add([]byte{})
	// Rule a: a keepalive from a new port with a learned index.
	f.Add(evs(ev(a, 1, 1, 0, 0), ev(upstream, 2, 7, 1, 4), ev(b, 4, 7, 0, 6), ev(upstream, 4, 3, 0, 0)))
	// Rule b: a handshake from a new port.
	f.Add(evs(ev(a, 4, 3, 0, 0), ev(b, 1, 2, 0, 4), ev(upstream, 4, 3, 0, 4), ev(upstream, 2, 8, 2, 4), ev(upstream, 4, 3, 0, 0)))
	// An attacker guessing indexes and spraying initiations.
	f.Add(evs(ev(a, 1, 1, 0, 0), ev(upstream, 2, 7, 1, 4), ev(c, 4, 6, 0, 0), ev(c, 4, 7, 0, 0),
		ev(c, 1, 1, 0, 0), ev(d, 1, 1, 0, 0), ev(upstream, 2, 9, 1, 4), ev(upstream, 3, 1, 0, 0)))
	// A cookie to a pending initiation, then ageing past every limit.
	f.Add(evs(ev(a, 4, 3, 0, 0), ev(a1, 1, 5, 0, 4), ev(upstream, 3, 5, 0, 4), ev(upstream, 2, 9, 5, 9),
		ev(b, 4, 9, 0, 13), ev(upstream, 4, 0, 0, 15)))
	// Save and restore between learning and roaming.
	f.Add(evs(ev(a, 1, 1, 0, 0), ev(upstream, 2, 7, 1, 4), ev(fuzzRestore, 0, 0, 0, 6), ev(b, 4, 7, 0, 6),
		ev(upstream, 1, 11, 0, 0), ev(c, 4, 11, 0, 0), ev(fuzzRestore, 0, 0, 0, 0), ev(upstream, 4, 0, 0, 0)))
	// The upstream speaks first.
	f.Add(evs(ev(upstream, 2, 7, 1, 0), ev(upstream, 3, 1, 0, 0), ev(b, 4, 7, 0, 0)))

	f.Fuzz(func(t *testing.T, data []byte) {
		eps := endpoints(fuzzEndpoints - 4)
		m := fuzzModel{learned: map[uint32]bool{}, inits: map[uint32]uint32{}}
		var p roam.Peer
		now := t0
		endpointOf := func() int {
			for k, e := range eps {
				if e.addr == p.Addr() && e.listener == p.Listener() {
					return k
				}
			}
			return -1
		}
		for i := 0; i+4 <= len(data); i += 4 {
			who := int(data[i]) % fuzzWho
			typ := wgproto.Type(int(data[i]) / fuzzWho % 5)
			index, receiver := uint32(data[i+1])%fuzzIndexes, uint32(data[i+2])%fuzzIndexes
			now = now.Add(fuzzSteps[int(data[i+3])%len(fuzzSteps)])
			h := wgproto.Header{Type: typ, Index: index}
			if typ == wgproto.TypeResponse {
				h.Receiver = receiver
			}
			before := endpointOf()

			switch who {
			case fuzzRestore:
				st := p.State()
				text, err := json.Marshal(st)
				if err != nil {
					t.Fatal(err)
				}
				var back roam.State
				if err := json.Unmarshal(text, &back); err != nil {
					t.Fatal(err)
				}
				var q roam.Peer
				err = q.Restore(back)
				if m.opened != (err == nil) {
					t.Fatalf("event %d: Restore after opened=%v: %v", i/4, m.opened, err)
				}
				if err == nil {
					p = q
				}
				if endpointOf() != before {
					t.Fatalf("event %d: restore moved the session from endpoint %d to %d", i/4, before, endpointOf())
				}

			case fuzzUpstream:
				switch typ {
				case wgproto.TypeResponse:
					m.answered = m.answered || m.opened // before opening it is not seen
					m.learned[index] = true
					for k := range fuzzEndpoints {
						if m.inits[receiver]&(1<<k) != 0 {
							m.legit[k] = true
						}
					}
				case wgproto.TypeInitiation:
					m.learned[index] = true
				}
				to, via, moved, ok := p.FromUpstream(now, h)
				if ok != m.opened {
					t.Fatalf("event %d: FromUpstream ok=%v with opened=%v", i/4, ok, m.opened)
				}
				if !ok {
					continue
				}
				dest := -1
				for k, e := range eps {
					if e.addr == to && e.listener == via {
						dest = k
					}
				}
				if dest < 0 {
					t.Fatalf("event %d: reply to %v via %d, not a client endpoint", i/4, to, via)
				}
				allowed := m.legit[dest]
				if typ == wgproto.TypeCookie && m.inits[index]&(1<<dest) != 0 {
					allowed = true // a cookie may go to its initiation's sender
				}
				if !allowed {
					t.Fatalf("event %d: %v reply to endpoint %d, which was never confirmed (legit %v)", i/4, typ, dest, m.legit)
				}
				if after := endpointOf(); moved != (after != before) || (moved && after != dest) {
					t.Fatalf("event %d: moved=%v but the session went from endpoint %d to %d (reply to %d)", i/4, moved, before, after, dest)
				}
				if typ != wgproto.TypeCookie && dest != endpointOf() {
					t.Fatalf("event %d: %v reply to endpoint %d, but the session is at %d", i/4, typ, dest, endpointOf())
				}

			default: // a client endpoint
				k := who
				if !m.opened || !m.answered {
					// The address that opens the session, and before the
					// first response any address, may receive replies.
					m.opened, m.legit[k] = true, true
				}
				switch typ {
				case wgproto.TypeTransport:
					if m.learned[index] {
						m.legit[k] = true
					}
				case wgproto.TypeInitiation:
					m.inits[index] |= 1 << k
				}
				moved := p.FromClient(now, h, eps[k].addr, eps[k].listener)
				after := endpointOf()
				if moved != (after != before && before >= 0) || (moved && after != k) {
					t.Fatalf("event %d: moved=%v but the session went from endpoint %d to %d (sender %d)", i/4, moved, before, after, k)
				}
			}
			if s := endpointOf(); m.opened && (s < 0 || !m.legit[s]) {
				t.Fatalf("event %d: the session is at endpoint %d, which was never confirmed (legit %v)", i/4, s, m.legit)
			}
		}
	})
}
