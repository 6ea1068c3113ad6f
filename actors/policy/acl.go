package policy

import (
	"net/netip"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// ClientIDs admits only the listed client IDs (--allow-client): a relay
// for known WARP devices refuses everyone else before any socket opens.
// The set is built once and shared read-only by every client's actor. An
// empty list admits nobody; leave the policy out to admit everyone.
func ClientIDs(allowed []wgproto.ClientID) Factory {
	set := make(map[wgproto.ClientID]struct{}, len(allowed))
	for _, id := range allowed {
		set[id] = struct{}{}
	}
	props := actor.PropsFromFunc(func(ctx actor.Context) {
		m, ok := ctx.Message().(*messages.AdmitSession)
		if !ok {
			return
		}
		if _, ok := set[m.Client]; !ok {
			ctx.Respond(m.Refuse(messages.RefusedClientNotAllowed))
			return
		}
		ctx.Respond(m.Admit())
	})
	return func() *actor.Props { return props }
}

// Sources admits sessions by the source address of the initiation that
// asks (--allow-cidr, --deny-cidr). A source in any deny prefix is refused;
// otherwise, if allow is not empty, it must be in an allow prefix. Prefixes
// are masked, and IPv4-mapped IPv6 prefixes and addresses are treated as
// the IPv4 ones they carry, so "192.0.2.0/24" matches a client seen on a
// dual-stack socket as ::ffff:192.0.2.7.
func Sources(allow, deny []netip.Prefix) Factory {
	allow, deny = normalizePrefixes(allow), normalizePrefixes(deny)
	props := actor.PropsFromFunc(func(ctx actor.Context) {
		m, ok := ctx.Message().(*messages.AdmitSession)
		if !ok {
			return
		}
		if reason := sourceVerdict(m.From.Addr(), allow, deny); reason != "" {
			ctx.Respond(m.Refuse(reason))
			return
		}
		ctx.Respond(m.Admit())
	})
	return func() *actor.Props { return props }
}

// sourceVerdict returns the refusal reason for ip, or "" to admit it.
func sourceVerdict(ip netip.Addr, allow, deny []netip.Prefix) string {
	ip = ip.Unmap()
	for _, p := range deny {
		if p.Contains(ip) {
			return messages.RefusedSourceDenied
		}
	}
	if len(allow) == 0 {
		return ""
	}
	for _, p := range allow {
		if p.Contains(ip) {
			return ""
		}
	}
	return messages.RefusedSourceNotAllowed
}

// normalizePrefixes masks each prefix and turns IPv4-mapped IPv6 prefixes
// (::ffff:a.b.c.d/96+n) into IPv4 ones (a.b.c.d/n). Invalid prefixes are
// dropped; configuration parsing reports them.
func normalizePrefixes(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if !p.IsValid() {
			continue
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out
}
