package main

import (
	"errors"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/actors/relay"
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

	mu     sync.Mutex
	relays []*relay.Relay
	saved  *state.File // what the state file held at start, until restored

	dirty    chan struct{}
	stopSave chan struct{}
	saveDone chan struct{}
}

func newDaemon(log *zap.Logger, statePath string) *daemon {
	return &daemon{log: log, system: relay.NewSystem(log), statePath: statePath, saved: state.New()}
}

// loadState reads the state file. A file that is not a udpfwd state file
// is moved aside and the relay starts empty; one that cannot be read at all
// (permissions) is an error.
func (d *daemon) loadState() error {
	if d.statePath == "" {
		return nil
	}
	f, err := state.Load(d.statePath)
	var ce *state.CorruptError
	switch {
	case errors.As(err, &ce):
		aside, qerr := state.Quarantine(d.statePath, time.Now())
		if qerr != nil {
			return qerr
		}
		d.log.Error("state file unreadable; starting with no sessions, the bad file is kept",
			zap.String("file", d.statePath), zap.String("kept_as", aside), zap.Error(ce.Err))
		return nil
	case err != nil:
		return err
	}
	d.saved = f
	n := 0
	for _, ss := range f.Relays {
		n += len(ss)
	}
	d.log.Info("state file read", zap.String("file", d.statePath), zap.Int("sessions", n), zap.Time("saved", f.Saved))
	return nil
}

// start starts a relay with the sessions the state file holds for it.
func (d *daemon) start(c relay.Config) (*relay.Relay, error) {
	opts := []relay.Option{relay.WithSystem(d.system)}
	if saved := d.saved.Relays[c.Name]; len(saved) > 0 {
		opts = append(opts, relay.WithRestore(saved))
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
	d.mu.Lock()
	relays := d.relays
	d.relays = nil
	d.mu.Unlock()
	for i := len(relays) - 1; i >= 0; i-- {
		if err := relays[i].Close(); err != nil {
			d.log.Warn("stop relay", zap.String("relay", relays[i].Name()), zap.Error(err))
		}
	}
	d.system.Shutdown()
}

// startAll starts every relay or none.
func (d *daemon) startAll(cfgs []relay.Config, nameErr func(relay.Config, error) error) error {
	for _, c := range cfgs {
		if _, err := d.start(c); err != nil {
			d.stop()
			return nameErr(c, err)
		}
	}
	return nil
}
