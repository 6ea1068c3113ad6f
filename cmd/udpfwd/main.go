// Command udpfwd is a relay for Cloudflare WARP (WireGuard) that keeps one
// stable upstream UDP source port per WARP client ID, so that a roaming
// client stays on the same WARP server; and, with -f, a static UDP port
// forwarder.
//
// This file reads the command line into one configuration (internal/config)
// and handles signals; the relay itself is in package actors/relay.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/internal/cli"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/logx"
	"github.com/udpfwd/udpfwd/internal/sdnotify"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise the module version from the build info is shown.
var version = ""

// Exit codes.
const (
	exitOK      = 0
	exitRuntime = 1 // the system refused: port in use, permission, ...
	exitUsage   = 2 // the command line or a file given on it is wrong
)

const usageText = `udpfwd: a WARP (WireGuard) relay with one stable upstream port per client ID

Usage:
  udpfwd -r LISTEN UPSTREAM [flags]   relay WireGuard, grouping by WARP client ID
  udpfwd -f FILE [flags]              static UDP port forwarding, rules from FILE
  udpfwd -c CONFIG [flags]            relays from a YAML config file (SIGHUP reloads it)
  udpfwd check -c CONFIG              validate CONFIG and print the effective config
  udpfwd sessions [--admin ADDR]      show a running udpfwd's sessions
  udpfwd id ID...                     show a client ID as base64, hex and decimal
  udpfwd wgcfrelay LISTEN UPSTREAM    the same as -r (cinit/udpfwd's form)
  udpfwd udpfwd FILE                  the same as -f (cinit/udpfwd's form)

  LISTEN    ip:port to listen on; [::]:2408 listens on IPv6 and IPv4; several
            comma-separated, ip:first-last for a range: [::]:2408,[::]:500-501
  UPSTREAM  host:port of the WARP endpoint, e.g. engage.cloudflareclient.com:2408;
            several comma-separated make a pool with failover
  FILE      lines "in-addr,in-port,out-addr,out-port,dest-addr,dest-port"
            (or separated by ';'); blank lines and # comments allowed

Flags:
`

// usageError is an error in what the user typed: exit 2.
type usageError struct{ error }

// options are the parsed command line.
type options struct {
	fs          *pflag.FlagSet
	relay       bool
	forwardFile string
	configFile  string
	debug       bool
	version     bool
	args        []string
	// settings are the values of the flags that set config keys, as
	// given, by flag name (config.Flags).
	settings map[string]*flagValues
}

func newFlagSet(o *options) *pflag.FlagSet {
	fs := cli.NewFlagSet("udpfwd")
	fs.BoolVarP(&o.relay, "r", "r", false, "relay WireGuard by client ID from LISTEN to UPSTREAM")
	cli.ValueName(fs, "r", "LISTEN UPSTREAM")
	fs.StringVarP(&o.forwardFile, "f", "f", "", "static UDP forwarding, rules from `FILE`")
	fs.StringVarP(&o.configFile, "c", "c", "", "relays from the YAML config `FILE`; the flags below, given too, override it for every relay")
	fs.BoolVarP(&o.debug, "d", "d", false, "debug logs (same as --log-level debug)")
	o.settings = make(map[string]*flagValues)
	for _, cf := range config.Flags() {
		v := &flagValues{def: cf.Default, isSwitch: cf.Switch}
		o.settings[cf.Name] = v
		f := fs.VarPF(v, cf.Name, "", cf.Usage)
		if cf.Switch {
			f.NoOptDefVal = "true"
		}
	}
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	o.fs = fs
	return fs
}

// printUsage prints the usage text and the flags.
func printUsage(fs *pflag.FlagSet, out io.Writer) {
	fmt.Fprint(out, usageText)
	cli.PrintFlags(out, fs)
}

// The forms of the seed, cinit's udpfwd applet, which udpfwd also takes:
// "udpfwd wgcfrelay LISTEN UPSTREAM" is -r, "udpfwd udpfwd FILE" is -f.
const (
	seedRelay   = "wgcfrelay"
	seedForward = "udpfwd"
)

// parse reads the command line. Flags may come before, between or after
// the positional arguments, as in the seed's "udpfwd -r LISTEN UPSTREAM -d";
// so may -d in the seed's forms ("udpfwd wgcfrelay -d LISTEN UPSTREAM").
func parse(args []string, out io.Writer) (*options, error) {
	o := &options{}
	fs := newFlagSet(o)
	form := ""
	if len(args) > 0 && (args[0] == seedRelay || args[0] == seedForward) {
		form, args = args[0], args[1:]
	}
	if err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			printUsage(fs, out)
			return nil, err
		}
		return nil, usageError{err}
	}
	o.args = fs.Args()
	if o.version {
		return o, nil
	}
	if err := o.seedForm(form); err != nil {
		return nil, usageError{err}
	}
	modes := 0
	for _, m := range []bool{o.relay, o.forwardFile != "", o.configFile != ""} {
		if m {
			modes++
		}
	}
	switch {
	case modes > 1:
		return nil, usageError{errors.New("-r, -f and -c cannot be used together")}
	case o.configFile != "" && len(o.args) != 0:
		return nil, usageError{fmt.Errorf("unexpected argument %q after -c FILE", o.args[0])}
	case o.relay && len(o.args) != 2:
		return nil, usageError{fmt.Errorf("-r needs LISTEN and UPSTREAM, got %d argument(s)", len(o.args))}
	case o.forwardFile != "" && len(o.args) != 0:
		return nil, usageError{fmt.Errorf("unexpected argument %q after -f FILE", o.args[0])}
	case modes == 0:
		if len(o.args) > 0 {
			return nil, usageError{fmt.Errorf("unexpected argument %q: use -r LISTEN UPSTREAM, -f FILE or -c CONFIG", o.args[0])}
		}
		return nil, usageError{errors.New("use -r LISTEN UPSTREAM, -f FILE or -c CONFIG")}
	}
	return o, nil
}

// seedForm turns the seed's form, if the command line used one, into the
// mode it stands for: "wgcfrelay LISTEN UPSTREAM" into -r, "udpfwd FILE"
// into -f. Those forms choose the mode themselves, so -r, -f and -c are
// refused with them.
func (o *options) seedForm(form string) error {
	if form == "" {
		return nil
	}
	if o.relay || o.forwardFile != "" || o.configFile != "" {
		return fmt.Errorf("udpfwd %s takes no -r, -f or -c: it is one of them", form)
	}
	switch {
	case form == seedRelay && len(o.args) != 2:
		return fmt.Errorf("%s needs LISTEN and UPSTREAM, got %d argument(s)", form, len(o.args))
	case form == seedRelay:
		o.relay = true
	case len(o.args) != 1:
		return fmt.Errorf("%s needs FILE, got %d argument(s)", form, len(o.args))
	default:
		o.forwardFile, o.args = o.args[0], nil
	}
	return nil
}

// versionString is what --version and udpfwd_build_info show.
func versionString() string {
	bi, _ := debug.ReadBuildInfo()
	return versionFrom(version, bi)
}

// versionFrom is the version set at build time (-X main.version, as the
// release script sets it from the tag) if any; otherwise the module
// version from the build info with the VCS revision it was built from,
// "+dirty" if the checkout had changes: "(devel) 480282a6f1d3+dirty". A
// module version that already names the revision (Go's pseudo-version for
// an untagged commit) is shown as it is.
func versionFrom(v string, bi *debug.BuildInfo) string {
	if v != "" {
		return v
	}
	if bi == nil {
		return "(devel)"
	}
	mv := bi.Main.Version
	if mv == "" {
		mv = "(devel)"
	}
	var rev string
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return mv
	}
	rev = rev[:min(len(rev), 12)]
	if strings.Contains(mv, rev) {
		return mv
	}
	if dirty {
		rev += "+dirty"
	}
	return mv + " " + rev
}

func main() {
	setGCPercent(os.Getenv)
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(newFlagSet(&options{}), stderr)
		return exitUsage
	}
	switch args[0] {
	case "sessions":
		return runSessions(args[1:], stdout, stderr)
	case "check":
		return runCheck(args[1:], stdout, stderr)
	case "id":
		return runID(args[1:], stdout, stderr)
	}
	o, err := parse(args, stdout)
	if errors.Is(err, pflag.ErrHelp) {
		return exitOK // usage already printed, as asked
	}
	if err != nil {
		return fail(stderr, err)
	}
	if o.version {
		fmt.Fprintln(stdout, "udpfwd", versionString())
		return exitOK
	}
	cfg, warnings, err := o.config()
	if err != nil {
		return fail(stderr, err)
	}
	adm, err := adminSettingsOf(cfg)
	if err != nil {
		return fail(stderr, usageError{err})
	}
	log, err := logx.New(logx.Options{Level: cfg.Log.Level, Format: cfg.Log.Format})
	if err != nil {
		return fail(stderr, usageError{err})
	}
	defer log.Sync() //nolint:errcheck // stderr
	logWarnings(log, warnings)

	// Signals are caught before anything slow or blocking: a service
	// manager's stop at any point of start-up is a prompt, clean stop.
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)

	d := newDaemon(log, cfg)
	d.rules = o.forwardFile != ""
	err = startOrStop(sig, log, func() error {
		if err := d.openState(stateSizeLimit(cfg.Relays)); err != nil {
			return err
		}
		if err := d.startCluster(cfg.Cluster); err != nil {
			d.stop()
			return err
		}
		err := d.startAll(cfg, func(i int, err error) error {
			if o.forwardFile != "" {
				return fmt.Errorf("%s: %w", cfg.Origin(i), err)
			}
			return fmt.Errorf("relay %s: %w", cfg.Relays[i].Name, err)
		})
		if err != nil {
			return err
		}
		d.reloads.Record(true, time.Now()) // the load at start, for udpfwd_config_reload_success
		if err := d.startAdmin(adm); err != nil {
			d.stop()
			return err
		}
		d.startSaving()
		return nil
	})
	if errors.Is(err, errStoppedStarting) {
		return exitOK
	}
	if err != nil {
		return fail(stderr, err)
	}
	if err := sdnotify.Ready(); err != nil {
		log.Warn("tell systemd we are ready", zap.Error(err))
	}

	for {
		select {
		case <-hup:
			if o.configFile == "" {
				log.Info("SIGHUP: nothing to reload without -c CONFIG")
				continue
			}
			sdnotify.Reloading() //nolint:errcheck // best effort
			d.reload(o)
			sdnotify.Ready() //nolint:errcheck // best effort
		case s := <-sig:
			log.Info("shutting down", zap.Stringer("signal", s))
			sdnotify.Stopping() //nolint:errcheck // best effort
			go func() {
				<-sig
				log.Warn("second signal: exiting now")
				os.Exit(exitRuntime)
			}()
			d.stop()
			return exitOK
		}
	}
}

// logWarnings logs the configuration's warnings: values that work but
// probably do not do what was meant.
func logWarnings(log *zap.Logger, warnings []*config.Error) {
	for _, w := range warnings {
		log.Warn("config: " + w.Error())
	}
}

const checkUsageText = `Usage: udpfwd check -c CONFIG [-q]

Validates CONFIG and prints the effective configuration, defaults filled in.
Warnings (values that work but probably do not do what was meant) go to
stderr; the exit code is 0 for a valid file, 2 for one with a mistake.

Flags:
`

// runCheck is "udpfwd check -c FILE": validate and print the effective
// configuration. Exit 0 if valid, 2 if not.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("udpfwd check")
	file := fs.StringP("c", "c", "", "the config `FILE` to check")
	quiet := fs.BoolP("q", "q", false, "print nothing on stdout when the file is valid")
	if err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, checkUsageText)
			cli.PrintFlags(stdout, fs)
			return exitOK
		}
		return fail(stderr, usageError{err})
	}
	if *file == "" || fs.NArg() > 0 {
		return fail(stderr, usageError{errors.New("check needs -c CONFIG and nothing else")})
	}
	f, err := config.Read(*file)
	if err != nil {
		return fail(stderr, usageError{err})
	}
	warnings, err := f.Validate()
	if err != nil {
		return fail(stderr, usageError{err})
	}
	for _, w := range warnings {
		fmt.Fprintf(stderr, "udpfwd: warning: %s\n", w)
	}
	out, err := f.Effective()
	if err != nil {
		return fail(stderr, usageError{err})
	}
	if err := checkStateDir(f.StateFile); err != nil {
		return fail(stderr, usageError{err})
	}
	if _, err := adminSettingsOf(f); err != nil {
		return fail(stderr, usageError{err})
	}
	if !*quiet {
		stdout.Write(out)
	}
	return exitOK
}

// fail prints err as one line and returns its exit code.
func fail(stderr io.Writer, err error) int {
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "udpfwd: %s (see udpfwd -h)\n", msg)
		return exitUsage
	}
	fmt.Fprintf(stderr, "udpfwd: %s\n", msg)
	return exitRuntime
}
