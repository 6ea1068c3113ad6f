package policy

import (
	"net/netip"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// AllowLists returns the verdict of the allow-lists ClientIDs and Sources
// (--allow-client, --allow-cidr, --deny-cidr) on a client at source
// address from, as a function: their refusal reason (messages.Refused*),
// or "" to admit it. Empty lists admit everyone, as leaving the policies
// out does. A reload applies it to live sessions, whose policy actors
// decided under the old lists.
func AllowLists(clients []wgproto.ClientID, allow, deny []netip.Prefix) func(client wgproto.ClientID, from netip.Addr) string {
	var set map[wgproto.ClientID]struct{}
	if len(clients) > 0 {
		set = make(map[wgproto.ClientID]struct{}, len(clients))
		for _, id := range clients {
			set[id] = struct{}{}
		}
	}
	allow, deny = normalizePrefixes(allow), normalizePrefixes(deny)
	return func(client wgproto.ClientID, from netip.Addr) string {
		if set != nil {
			if _, ok := set[client]; !ok {
				return messages.RefusedClientNotAllowed
			}
		}
		return sourceVerdict(from, allow, deny)
	}
}
