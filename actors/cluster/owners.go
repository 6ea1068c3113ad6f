package cluster

import (
	"slices"

	"github.com/asynkron/protoactor-go/cluster"
)

// view is one node's picture of the cluster: the addresses of the members
// that host sessions, sorted. It is replaced whole on every topology change
// and read without locks.
type view struct {
	members []string
}

// newView takes the members of a topology that have the session kind.
func newView(ms []*cluster.Member) *view {
	v := &view{members: make([]string, 0, len(ms))}
	for _, m := range ms {
		if m.HasKind(SessionKind) {
			v.members = append(v.members, m.Address())
		}
	}
	slices.Sort(v.members)
	return v
}

// has reports whether addr is a current member.
func (v *view) has(addr string) bool {
	_, ok := slices.BinarySearch(v.members, addr)
	return ok
}

// FNV-1a, 32 bits: the hash protoactor's Rendezvous uses.
const (
	fnvOffset32 = 2166136261
	fnvPrime32  = 16777619
)

// owners returns the two members that rank highest for key by rendezvous
// hashing, best first: the score of a member is FNV-1a over the key followed
// by the member's address, exactly as protoactor's cluster.Rendezvous scores
// it, so first is the member that Rendezvous.GetByClusterIdentity picks
// (ties aside). second is "" when there is one member; both are "" when
// there is none.
//
// Why two: a key's directory entry lives on both. When one member joins or
// leaves, the two highest-ranked members before and after the change always
// share at least one member (rendezvous ranks the others unchanged), so a
// lookup that asks both of its owners finds an entry registered under the
// old or the new membership, while nodes still disagree about the
// membership and before owners have re-registered their sessions.
func (v *view) owners(key string) (first, second string) {
	h0 := uint32(fnvOffset32)
	for i := 0; i < len(key); i++ {
		h0 ^= uint32(key[i])
		h0 *= fnvPrime32
	}
	var s1, s2 uint32
	for _, m := range v.members {
		h := h0
		for i := 0; i < len(m); i++ {
			h ^= uint32(m[i])
			h *= fnvPrime32
		}
		switch {
		case first == "" || h > s1:
			second, s2 = first, s1
			first, s1 = m, h
		case second == "" || h > s2:
			second, s2 = m, h
		}
	}
	return first, second
}
