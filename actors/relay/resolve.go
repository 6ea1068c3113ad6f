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
	"github.com/udpfwd/udpfwd/internal/stats"
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

// resolver is the goroutine that keeps every worker's supervisor told of
// the upstream hostname's address (resolveLoop): the only sender of
// UpstreamResolved.
type resolver struct {
	stop context.CancelFunc
	done chan struct{}
	kick chan struct{} // look up again now: the interval changed
}

// startResolver starts the resolver of host:port.
func (r *Relay) startResolver(host string, port uint16) {
	ctx, cancel := context.WithCancel(context.Background())
	res := &resolver{stop: cancel, done: make(chan struct{}), kick: make(chan struct{}, 1)}
	r.resolver = res
	go r.resolveLoop(ctx, res, host, port)
}

// stopResolver stops the resolver, if one runs, and waits for it: after
// it returns no UpstreamResolved is sent any more.
func (r *Relay) stopResolver() {
	if res := r.resolver; res != nil {
		res.stop()
		<-res.done
		r.resolver = nil
	}
}

// kickResolver makes the resolver look up again now and go on at the
// current resolve interval.
func (r *Relay) kickResolver() {
	if res := r.resolver; res != nil {
		select {
		case res.kick <- struct{}{}:
		default:
		}
	}
}

// resolveLoop looks host up every resolve interval and tells the
// supervisors when its address changes. While the name has no address yet
// it retries sooner, after 5 s and then twice as long each time, up to the
// interval. A failure is logged when it starts or its reason changes, and
// the recovery once, not every retry.
func (r *Relay) resolveLoop(ctx context.Context, res *resolver, host string, port uint16) {
	defer close(res.done)
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
				r.counters.Count(stats.UpstreamChanged) // here, not by each worker's supervisor
				r.log.Info("upstream address changed; new sessions use it", zap.String("host", host), zap.Stringer("addr", ap), zap.Stringer("was", last))
			case ap != last:
				r.log.Info("upstream resolved", zap.String("host", host), zap.Stringer("addr", ap))
			case failing != "":
				r.log.Info("upstream resolves again", zap.String("host", host), zap.Stringer("addr", ap))
			}
			failing = ""
			if ap != last {
				last = ap
				r.status.SetUpstream(ap)
				r.upstreamKnown.Store(true)
				for _, w := range r.workers {
					r.system.Root.Send(w.supervisor, &messages.UpstreamResolved{Addr: ap})
				}
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
