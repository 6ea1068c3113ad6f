package relay

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/config"
)

// resolve looks the upstream up and picks one address: the configured one,
// else the first IPv4 address of its name (a VPS without IPv6 is common),
// else the first IPv6.
func (r *Relay) resolve(ctx context.Context, up config.HostPort) (netip.AddrPort, error) {
	host, port := up.Name, up.Port
	if up.Addr.IsValid() {
		return netip.AddrPortFrom(up.Addr.Unmap(), port), nil
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	lookup := net.DefaultResolver.LookupNetIP
	if r.lookup != nil {
		lookup = r.lookup
	}
	addrs, err := lookup(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	for _, a := range addrs {
		if a.Unmap().Is4() {
			return netip.AddrPortFrom(a.Unmap(), port), nil
		}
	}
	if len(addrs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("%s has no address", host)
	}
	return netip.AddrPortFrom(addrs[0], port), nil
}

// resolver is the goroutine that keeps the supervisor told of one upstream
// endpoint's hostname's address (resolveLoop): the only sender of
// UpstreamResolved for that endpoint. A relay has one per endpoint given by
// name.
type resolver struct {
	stop context.CancelFunc
	done chan struct{}
	kick chan struct{} // look up again now: the interval changed
}

// startResolver starts the resolver of the endpoint h, a name.
func (r *Relay) startResolver(h config.HostPort) {
	ctx, cancel := context.WithCancel(context.Background())
	res := &resolver{stop: cancel, done: make(chan struct{}), kick: make(chan struct{}, 1)}
	if r.resolvers == nil {
		r.resolvers = make(map[string]*resolver)
	}
	r.resolvers[h.String()] = res
	go r.resolveLoop(ctx, res, h)
}

// stopResolvers stops the resolvers of the endpoints that keep does not
// keep (every one, for nil), and waits for them: after it returns they send
// no UpstreamResolved any more, and their endpoints' addresses are
// forgotten.
func (r *Relay) stopResolvers(keep func(endpoint string) bool) {
	for name, res := range r.resolvers {
		if keep != nil && keep(name) {
			continue
		}
		res.stop()
		<-res.done
		delete(r.resolvers, name)
		r.setEndpointAddr(name, netip.AddrPort{})
	}
}

// kickResolvers makes every resolver look up again now and go on at the
// current resolve interval.
func (r *Relay) kickResolvers() {
	for _, res := range r.resolvers {
		select {
		case res.kick <- struct{}{}:
		default:
		}
	}
}

// setEndpointAddr records endpoint's address now (the zero value: none)
// for the health record: /metrics shows every endpoint's address, and
// /healthz a relay none of whose endpoints has one.
func (r *Relay) setEndpointAddr(endpoint string, ap netip.AddrPort) {
	r.addrMu.Lock()
	defer r.addrMu.Unlock()
	if r.addrs == nil {
		r.addrs = make(map[string]netip.AddrPort)
	}
	if ap.IsValid() {
		r.addrs[endpoint] = ap
	} else {
		delete(r.addrs, endpoint)
	}
	all := make([]netip.AddrPort, 0, len(r.addrs))
	for _, a := range r.addrs {
		all = append(all, a)
	}
	r.status.SetUpstream(all...)
	r.upstreamKnown.Store(len(all) > 0)
}

// endpointAddr returns endpoint's address now, if it has one.
func (r *Relay) endpointAddr(endpoint string) netip.AddrPort {
	r.addrMu.Lock()
	defer r.addrMu.Unlock()
	return r.addrs[endpoint]
}

// resolveLoop looks the endpoint h's host up every resolve interval and
// tells the supervisor when its address changes. While the name has no address yet
// it retries sooner, after 5 s and then twice as long each time, up to the
// interval. A failure is logged when it starts or its reason changes, and
// the recovery once, not every retry.
func (r *Relay) resolveLoop(ctx context.Context, res *resolver, h config.HostPort) {
	defer close(res.done)
	host, port, endpoint := h.Name, h.Port, h.String()
	var last netip.AddrPort
	failing := "" // the last failure logged; "" while lookups work
	retry := unresolvedRetry
	for {
		ap, err := r.resolve(ctx, config.HostPort{Name: host, Port: port})
		every := time.Duration(r.resolveEvery.Load())
		wait := every
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			if !last.IsValid() {
				wait, retry = backoff(retry, every)
			}
			if msg := err.Error(); msg != failing {
				failing = msg
				fields := []zap.Field{zap.String("host", host), zap.Error(err), zap.Duration("retry_in", wait)}
				if last.IsValid() {
					fields = append(fields, zap.Stringer("still_using", last))
				}
				r.log.Warn("resolve upstream", fields...)
			}
		default:
			retry = unresolvedRetry
			switch {
			case ap != last && last.IsValid():
				r.log.Info("upstream address changed; new sessions use it", zap.String("host", host), zap.Stringer("addr", ap), zap.Stringer("was", last))
			case ap != last:
				r.log.Info("upstream resolved", zap.String("host", host), zap.Stringer("addr", ap))
			case failing != "":
				r.log.Info("upstream resolves again", zap.String("host", host), zap.Stringer("addr", ap))
			}
			failing = ""
			if ap != last {
				last = ap
				r.setEndpointAddr(endpoint, ap)
				r.system.Root.Send(r.supervisor, &messages.UpstreamResolved{Endpoint: endpoint, Addr: ap})
			}
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-res.kick:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// backoff returns how long to wait before looking up again a name that has
// not resolved yet, retry, and the wait after that, twice as long: neither
// is ever longer than the resolve interval every.
func backoff(retry, every time.Duration) (wait, next time.Duration) {
	return min(retry, every), min(2*retry, every)
}
