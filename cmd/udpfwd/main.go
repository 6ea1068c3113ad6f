// Command udpfwd is a relay for Cloudflare WARP (WireGuard) that keeps one
// stable upstream UDP source port per WARP client ID, so that a roaming
// client stays on the same WARP server; and, with -f, a static UDP port
// forwarder.
//
// This file turns flags into relay configurations and handles signals; the
// relay itself is in package actors/relay.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/udpfwd/udpfwd/actors/relay"
	"github.com/udpfwd/udpfwd/internal/config"
	"github.com/udpfwd/udpfwd/internal/logx"
	"github.com/udpfwd/udpfwd/internal/sdnotify"
	"github.com/udpfwd/udpfwd/internal/udpio"
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

  LISTEN    ip:port to listen on; [::]:2408 listens on IPv6 and IPv4
  UPSTREAM  host:port of the WARP endpoint, e.g. engage.cloudflareclient.com:2408
  FILE      lines "in-addr,in-port,out-addr,out-port,dest-addr,dest-port"
            (or separated by ';'); blank lines and # comments allowed

Flags:
`

// usageError is an error in what the user typed: exit 2.
type usageError struct{ error }

// options are the parsed command line.
type options struct {
	relay        bool
	forwardFile  string
	debug        bool
	idleTimeout  time.Duration
	logLevel     string
	logFormat    string
	socketBuffer int
	noGSO        bool
	upstreamBind string
	stateFile    string
	admin        string
	configFile   string
	version      bool
	args         []string
	set          map[string]bool // flags given on the command line
	security     securityFlags
}

func newFlagSet(o *options, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("udpfwd", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.BoolVar(&o.relay, "r", false, "relay mode: LISTEN and UPSTREAM follow")
	fs.StringVar(&o.forwardFile, "f", "", "static forward mode: read rules from `FILE`")
	fs.BoolVar(&o.debug, "d", false, "debug logs (same as --log-level debug)")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", relay.DefaultIdleTimeout, "end a session silent in either direction this `long`")
	fs.StringVar(&o.logLevel, "log-level", "info", "`level`: debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "console", "`format`: console or json")
	fs.IntVar(&o.socketBuffer, "socket-buffer", udpio.DefaultSocketBuffer, "receive and send buffer of every socket, in `bytes`")
	fs.BoolVar(&o.noGSO, "no-gso", false, "send every datagram as its own message, without UDP GSO (for a path that mishandles it)")
	fs.StringVar(&o.upstreamBind, "upstream-bind", "", "local `ip:port` for upstream sockets (port 0: the kernel chooses)")
	fs.StringVar(&o.stateFile, "state-file", "", "keep sessions in `FILE` so that they survive a restart on the same upstream ports")
	fs.StringVar(&o.admin, "admin", "", "serve /metrics, /healthz and /sessions on `ip:port` (off unless given)")
	fs.StringVar(&o.configFile, "c", "", "read relays from the YAML config `FILE`; flags given too override it")
	o.security.register(fs)
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	fs.Usage = func() { printUsage(fs, out) }
	return fs
}

// printUsage prints the usage text and the flags, long ones with "--".
func printUsage(fs *flag.FlagSet, out io.Writer) {
	fmt.Fprint(out, usageText)
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		left := dash + f.Name
		if name != "" {
			left += " " + name
		}
		if f.DefValue != "" && f.DefValue != "false" {
			usage += " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(out, "  %-26s %s\n", left, usage)
	})
	fmt.Fprintf(out, "  %-26s %s\n", "-h, --help", "show this help")
}

// parse reads the command line. Flags may come before, between or after
// the positional arguments, as in the seed's "udpfwd -r LISTEN UPSTREAM -d".
func parse(args []string, out io.Writer) (*options, error) {
	o := &options{}
	fs := newFlagSet(o, io.Discard) // errors are reported in one line by the caller
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				printUsage(fs, out)
				return nil, err
			}
			return nil, usageError{firstLine(err)}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			o.args = append(o.args, args[1:]...)
			break
		}
		o.args = append(o.args, args[0])
		args = args[1:]
	}
	o.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	if o.version {
		return o, nil
	}
	if o.debug {
		o.logLevel = "debug"
		o.set["log-level"] = true
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
	case o.idleTimeout <= 0:
		return nil, usageError{fmt.Errorf("--idle-timeout %v: must be positive", o.idleTimeout)}
	case o.socketBuffer <= 0:
		return nil, usageError{fmt.Errorf("--socket-buffer %d: must be positive", o.socketBuffer)}
	}
	if err := (logx.Options{Level: o.logLevel, Format: o.logFormat}).Validate(); err != nil {
		return nil, usageError{err}
	}
	if o.admin != "" {
		if _, err := relay.ParseAddrPort(o.admin, true); err != nil {
			return nil, usageError{fmt.Errorf("--admin: %w", err)}
		}
	}
	return o, nil
}

// firstLine keeps flag's error to one line.
func firstLine(err error) error {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return errors.New(s)
}

// configs turns options (and the config file they name) into relay
// configurations, and fills in the daemon-wide settings the file holds.
func configs(o *options) ([]relay.Config, error) {
	if o.configFile != "" {
		f, err := config.Load(o.configFile)
		if err != nil {
			return nil, usageError{err}
		}
		return fromFile(f, o)
	}
	if o.relay {
		c := relay.Config{
			Mode:         relay.ModeWireGuard,
			Listen:       []string{o.args[0]},
			Upstream:     o.args[1],
			UpstreamBind: o.upstreamBind,
			IdleTimeout:  o.idleTimeout,
			SocketBuffer: o.socketBuffer,
			NoGSO:        o.noGSO,
		}
		if err := o.security.apply(&c.Security, o.set); err != nil {
			return nil, usageError{err}
		}
		if err := c.Validate(); err != nil {
			return nil, usageError{err}
		}
		return []relay.Config{c}, nil
	}
	f, err := os.Open(o.forwardFile)
	if err != nil {
		return nil, usageError{fmt.Errorf("forward file: %w", err)}
	}
	defer f.Close()
	rules, err := config.ParseForwardRules(f, o.forwardFile)
	if err != nil {
		return nil, usageError{err}
	}
	cs := make([]relay.Config, 0, len(rules))
	for _, r := range rules {
		c := relay.Config{
			Name:         "line" + strconv.Itoa(r.Line),
			Mode:         relay.ModeForward,
			Listen:       []string{r.In.String()},
			Upstream:     r.Dest,
			UpstreamBind: r.Out.String(),
			SocketBuffer: o.socketBuffer,
			NoGSO:        o.noGSO,
		}
		if err := c.Validate(); err != nil {
			return nil, usageError{fmt.Errorf("%s:%d: %w", o.forwardFile, r.Line, err)}
		}
		cs = append(cs, c)
	}
	return cs, nil
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
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(newFlagSet(&options{}, stderr), stderr)
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
	if errors.Is(err, flag.ErrHelp) {
		return exitOK // usage already printed, as asked
	}
	if err != nil {
		return fail(stderr, err)
	}
	if o.version {
		fmt.Fprintln(stdout, "udpfwd", versionString())
		return exitOK
	}
	cfgs, err := configs(o)
	if err != nil {
		return fail(stderr, err)
	}
	log, err := logx.New(logx.Options{Level: o.logLevel, Format: o.logFormat})
	if err != nil {
		return fail(stderr, usageError{err})
	}
	defer log.Sync() //nolint:errcheck // stderr

	// Signals are caught before anything slow or blocking: a service
	// manager's stop at any point of start-up is a prompt, clean stop.
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)

	d := newDaemon(log, o.stateFile)
	err = startOrStop(sig, log, func() error {
		if err := d.openState(stateSizeLimit(cfgs)); err != nil {
			return err
		}
		err := d.startAll(cfgs, func(c relay.Config, err error) error {
			if o.forwardFile != "" {
				return fmt.Errorf("%s:%s: %w", o.forwardFile, strings.TrimPrefix(c.Name, "line"), err)
			}
			return fmt.Errorf("relay %s: %w", c.Name, err)
		})
		if err != nil {
			return err
		}
		if err := d.startAdmin(o.admin); err != nil {
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

// runCheck is "udpfwd check -c FILE": validate and print the effective
// configuration. Exit 0 if valid, 2 if not.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("udpfwd check", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	file := fs.String("c", "", "the config `FILE` to check")
	quiet := fs.Bool("q", false, "print nothing when the file is valid")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "Usage: udpfwd check -c CONFIG [-q]\n\nValidates CONFIG and prints the effective configuration, defaults filled in.")
			return exitOK
		}
		return fail(stderr, usageError{firstLine(err)})
	}
	if *file == "" || fs.NArg() > 0 {
		return fail(stderr, usageError{errors.New("check needs -c CONFIG and nothing else")})
	}
	f, err := config.Load(*file)
	if err != nil {
		return fail(stderr, usageError{err})
	}
	out, err := f.Effective()
	if err != nil {
		return fail(stderr, usageError{err})
	}
	if err := checkStateDir(f.StateFile); err != nil {
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
