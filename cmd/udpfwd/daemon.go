package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/cluster"
	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/admin"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/metrics"
	"github.com/udpfwd/udpfwd/internal/state"
)

// State file timing, with reasons.
const (
	// saveDelay gathers the session changes of a burst into one write.
	saveDelay = 500 * time.Millisecond
	// saveEvery also saves on a quiet relay, so that what sessions learn
	// (roaming state) is at most this old after a crash.
	saveEvery = 30 * time.Second
	// askTimeout bounds asking a relay for its sessions.
	askTimeout = 2 * time.Second
)

// daemon runs the configured relays in one actor system and keeps the
// state file.
type daemon struct {
	log       *zap.Logger
	system    *actor.ActorSystem
	statePath string
	lock      *state.Lock // held while running
	logConfig config.Log  // what the logger was built with
	// rules is set for a static forward file (-f): each relay's log lines
	// and /sessions row name the rule's origin (file:line:index).
	rules bool
	// reloads records every load of the configuration, at start and on
	// each SIGHUP, for /metrics.
	reloads *metrics.Reloads

	mu     sync.Mutex
	relays []*relay.Relay
	saved  *state.File // what the state file held at start, until restored

	dirty    chan struct{}
	stopSave chan struct{}
	saveDone chan struct{}

	admin         *admin.Server
	adminSettings adminSettings // what the running admin listener was started with

	// cluster is this process's cluster node, if the config names a
	// cluster (cluster.go); clusterOwner its reply mode.
	cluster      *cluster.Node
	clusterOwner bool
	clusterSub   *eventstream.Subscription
	// clusterConfig is the cluster block the process started with.
	clusterConfig config.Cluster
}

// adminSettings are the admin listener's settings: a change of any of them
// on a reload starts the listener anew.
type adminSettings struct {
	addr  string
	token string // the token file's content, read at each load
	hosts []string
}

func (a adminSettings) equal(b adminSettings) bool {
	return a.addr == b.addr && a.token == b.token && slices.Equal(a.hosts, b.hosts)
}

// adminSettingsOf reads cfg's admin settings, the token file included. A
// token file that cannot be read is an error of the configuration.
func adminSettingsOf(cfg *config.File) (adminSettings, error) {
	a := adminSettings{addr: cfg.Admin, hosts: cfg.AdminAllowHosts}
	if cfg.Admin != "" && cfg.AdminTokenFile != "" {
		t, err := admin.ReadTokenFile(cfg.AdminTokenFile)
		if err != nil {
			return adminSettings{}, err
		}
		a.token = t
	}
	return a, nil
}

// newDaemon returns a daemon for cfg's process-wide settings; its relays
// start with startAll.
func newDaemon(log *zap.Logger, cfg *config.File) *daemon {
	return &daemon{log: log, system: relay.NewSystem(log), statePath: cfg.StateFile, logConfig: cfg.Log, saved: state.New(),
		reloads: metrics.NewReloads()}
}

// start starts a relay with the sessions the state file holds for it;
// origin, if not empty, is where its forward rule was written.
func (d *daemon) start(c config.Relay, origin string) (*relay.Relay, error) {
	opts := d.relayOptions()
	if saved := d.saved.Relays[c.Name]; len(saved) > 0 {
		opts = append(opts, relay.WithRestore(saved))
	}
	if origin != "" {
		opts = append(opts, relay.WithOrigin(origin))
	}
	r, err := relay.Start(c, d.log, opts...)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.relays = append(d.relays, r)
	d.mu.Unlock()
	return r, nil
}

// startSaving keeps the state file current: soon after sessions change,
// and every saveEvery.
func (d *daemon) startSaving() {
	if d.statePath == "" {
		return
	}
	d.dirty = make(chan struct{}, 1)
	d.stopSave = make(chan struct{})
	d.saveDone = make(chan struct{})
	sub := d.system.EventStream.Subscribe(func(evt any) {
		switch evt.(type) {
		case *messages.SessionOpened, *messages.ClientRoamed, *messages.SessionExpired,
			*messages.SessionFailed, *messages.SessionRestored:
			select {
			case d.dirty <- struct{}{}:
			default:
			}
		}
	})
	go func() {
		defer close(d.saveDone)
		defer d.system.EventStream.Unsubscribe(sub)
		tick := time.NewTicker(saveEvery)
		defer tick.Stop()
		d.save() // the restored sessions, with their possibly new ports
		for {
			select {
			case <-d.stopSave:
				return
			case <-tick.C:
			case <-d.dirty:
				select {
				case <-d.stopSave:
					return
				case <-time.After(saveDelay):
				}
			}
			d.save()
		}
	}()
}

// save writes every relay's sessions to the state file. A relay that does
// not answer keeps what was saved for it before.
func (d *daemon) save() {
	d.mu.Lock()
	relays := append([]*relay.Relay(nil), d.relays...)
	d.mu.Unlock()
	f := state.New()
	f.Saved = time.Now().UTC()
	for _, r := range relays {
		ss, err := r.Snapshot(askTimeout)
		if err != nil {
			d.log.Warn("state: relay did not answer; keeping its last saved sessions", zap.String("relay", r.Name()), zap.Error(err))
			ss = d.lastSaved(r.Name())
		}
		if len(ss) > 0 {
			f.Relays[r.Name()] = ss
		}
	}
	if err := state.Save(d.statePath, f); err != nil {
		d.log.Error("save state", zap.String("file", d.statePath), zap.Error(err))
		return
	}
	d.mu.Lock()
	d.saved = f
	d.mu.Unlock()
}

func (d *daemon) lastSaved(name string) []state.Session {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.saved.Relays[name]
}

// stop saves the sessions one last time, then stops every relay. The
// sessions closed by stopping are not saved as gone: the next start
// restores them.
func (d *daemon) stop() {
	if d.stopSave != nil {
		close(d.stopSave)
		<-d.saveDone
		d.save()
	}
	d.releaseState()
	d.stopAdmin()
	d.mu.Lock()
	relays := d.relays
	d.relays = nil
	d.mu.Unlock()
	for i := len(relays) - 1; i >= 0; i-- {
		if err := relays[i].Close(); err != nil {
			d.log.Warn("stop relay", zap.String("relay", relays[i].Name()), zap.Error(err))
		}
	}
	d.stopCluster()
	d.system.Shutdown()
}

// startAll starts every relay of cfg or none; nameErr says which relay (by
// its index in cfg.Relays) an error is about.
func (d *daemon) startAll(cfg *config.File, nameErr func(i int, err error) error) error {
	for i, c := range cfg.Relays {
		origin := ""
		if d.rules {
			origin = cfg.Origin(i)
		}
		if _, err := d.start(c, origin); err != nil {
			d.stop()
			return nameErr(i, err)
		}
	}
	return nil
}

// adminShutdownTimeout bounds the admin listener's graceful stop.
const adminShutdownTimeout = 2 * time.Second

// startAdmin starts the admin listener with a, if it has an address.
func (d *daemon) startAdmin(a adminSettings) error {
	if a.addr == "" {
		return nil
	}
	srv, err := admin.Start(a.addr, d.adminRelays(), admin.Options{
		Version:      versionString(),
		Healthy:      d.healthy,
		Logger:       d.log,
		Token:        a.token,
		AllowedHosts: a.hosts,
		Reloads:      d.reloads,
		Cluster:      d.clusterMetrics(),
	})
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.admin, d.adminSettings = srv, a
	d.mu.Unlock()
	return nil
}

func (d *daemon) adminRelays() []admin.Relay {
	d.mu.Lock()
	defer d.mu.Unlock()
	rs := make([]admin.Relay, 0, len(d.relays))
	for _, r := range d.relays {
		rs = append(rs, r)
	}
	return rs
}

// healthy is /healthz: every relay runs, its upstream has an address, it
// is below its session cap. Its error has one line per failing relay.
func (d *daemon) healthy() error {
	d.mu.Lock()
	relays := append([]*relay.Relay(nil), d.relays...)
	d.mu.Unlock()
	if len(relays) == 0 {
		return errors.New("no relay is running")
	}
	var errs []error
	for _, r := range relays {
		if err := r.Healthy(); err != nil {
			errs = append(errs, err)
		}
	}
	if d.cluster != nil {
		errs = append(errs, d.cluster.Health())
	}
	return errors.Join(errs...)
}

func (d *daemon) stopAdmin() {
	d.mu.Lock()
	srv := d.admin
	d.admin, d.adminSettings = nil, adminSettings{}
	d.mu.Unlock()
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		d.log.Warn("stop admin listener", zap.Error(err))
	}
}

// reload re-reads the config file (SIGHUP). Relays no longer in it stop;
// new ones start; a relay whose settings changed takes them in place
// (relay.Reconfigure: its listening sockets and every session's upstream
// socket stay open) or, for the few changes that cannot be made in place
// (a relay's mode, a forward's upstream), is started anew with its
// sessions carried over on their upstream ports. An unchanged relay is
// not touched. An invalid file, or an admin token file that cannot be
// read, changes nothing. Every load is recorded for
// udpfwd_config_reload_success: 1 if applied in full.
//
// The command line's flags apply over the new file as they did at start.
func (d *daemon) reload(o *options) {
	f, warnings, err := o.config()
	var adm adminSettings
	if err == nil {
		adm, err = adminSettingsOf(f)
	}
	if err != nil {
		d.reloads.Record(false, time.Now())
		d.log.Error("reload: config not applied, still running the previous one", zap.Error(err))
		return
	}
	logWarnings(d.log, warnings)
	if f.StateFile != d.statePath {
		d.log.Warn("reload: a new state_file applies at the next start", zap.String("state_file", f.StateFile))
	}
	if f.Log != d.logConfig {
		d.log.Warn("reload: log settings apply at the next start")
	}
	if !f.Cluster.Equal(&d.clusterConfig) {
		d.log.Warn("reload: cluster settings apply at the next start")
	}

	cfgs := f.Relays
	want := make(map[string]config.Relay, len(cfgs))
	for _, c := range cfgs {
		want[c.Name] = c
	}
	d.mu.Lock()
	current := append([]*relay.Relay(nil), d.relays...)
	d.mu.Unlock()
	kept, added, removed, changed, failed := 0, 0, 0, 0, 0
	for _, r := range current {
		c, ok := want[r.Name()]
		running := r.Config()
		switch {
		case !ok:
			d.remove(r)
			d.log.Info("reload: relay removed", zap.String("relay", r.Name()))
			removed++
		case c.Equal(&running):
			kept++
		default:
			if err := d.change(r, c); err != nil {
				d.log.Error("reload: relay not changed as asked", zap.String("relay", r.Name()), zap.Error(err))
				failed++
			}
			changed++
		}
		delete(want, r.Name())
	}
	for i, c := range cfgs {
		if _, new := want[c.Name]; !new {
			continue
		}
		origin := ""
		if d.rules {
			origin = f.Origin(i)
		}
		if _, err := d.start(c, origin); err != nil {
			d.log.Error("reload: relay not started", zap.String("relay", c.Name), zap.Error(err))
			failed++
			continue
		}
		added++
	}
	d.mu.Lock()
	running := d.adminSettings
	d.mu.Unlock()
	if !adm.equal(running) {
		d.stopAdmin()
		if err := d.startAdmin(adm); err != nil {
			d.log.Error("reload: admin listener", zap.Error(err))
			failed++
		}
	}
	d.refreshAdmin()
	d.markDirty()
	d.reloads.Record(failed == 0, time.Now())
	d.log.Info("reloaded", zap.String("config", o.configFile), zap.Int("unchanged", kept),
		zap.Int("changed", changed), zap.Int("added", added), zap.Int("removed", removed), zap.Int("failed", failed))
}

// change applies c to r in place, or, for a change that cannot be made in
// place, starts r anew (restart).
func (d *daemon) change(r *relay.Relay, c config.Relay) error {
	err := r.Reconfigure(c)
	if errors.Is(err, relay.ErrRestart) {
		d.log.Info("reload: relay started anew", zap.String("relay", c.Name), zap.String("why", err.Error()))
		return d.restart(r, c)
	}
	return err
}

// restart replaces r by a relay with configuration c that takes over r's
// sessions on their upstream ports. If c cannot start (say, its new listen
// address is taken), r's configuration is started again with them.
func (d *daemon) restart(r *relay.Relay, c config.Relay) error {
	saved, err := r.Snapshot(askTimeout)
	if err != nil {
		return fmt.Errorf("ask for its sessions: %w", err)
	}
	old := r.Config()
	d.remove(r)
	// The upstream a session was saved for is this relay's old one; a
	// session moves to the new configuration only if it is the same.
	nr, err := relay.Start(c, d.log, append(d.relayOptions(), relay.WithRestore(saved))...)
	if err != nil {
		back, berr := relay.Start(old, d.log, append(d.relayOptions(), relay.WithRestore(saved))...)
		if berr != nil {
			return fmt.Errorf("%w; and the previous configuration did not start again: %v", err, berr)
		}
		d.add(back)
		return err
	}
	d.add(nr)
	d.log.Info("reload: relay changed; its sessions were kept", zap.String("relay", c.Name), zap.Int("sessions", len(saved)))
	return nil
}

func (d *daemon) add(r *relay.Relay) {
	d.mu.Lock()
	d.relays = append(d.relays, r)
	d.mu.Unlock()
}

// remove stops r and forgets it.
func (d *daemon) remove(r *relay.Relay) {
	d.mu.Lock()
	for i, x := range d.relays {
		if x == r {
			d.relays = append(d.relays[:i], d.relays[i+1:]...)
			break
		}
	}
	d.mu.Unlock()
	if err := r.Close(); err != nil {
		d.log.Warn("stop relay", zap.String("relay", r.Name()), zap.Error(err))
	}
}

func (d *daemon) refreshAdmin() {
	d.mu.Lock()
	srv := d.admin
	d.mu.Unlock()
	if srv == nil {
		return
	}
	if err := srv.SetRelays(d.adminRelays()); err != nil {
		d.log.Warn("admin listener: update relays", zap.Error(err))
	}
}

// markDirty asks for the state file to be saved soon.
func (d *daemon) markDirty() {
	if d.dirty == nil {
		return
	}
	select {
	case d.dirty <- struct{}{}:
	default:
	}
}
