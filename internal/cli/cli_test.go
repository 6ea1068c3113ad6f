package cli_test

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/udpfwd/udpfwd/internal/cli"
)

// testFlags is a command line like udpfwd's: single-letter switches and
// values, long flags of several types.
type testFlags struct {
	fs      *pflag.FlagSet
	relay   bool
	debug   bool
	config  string
	idle    time.Duration
	clients int
	name    string
	gso     bool
}

func newTestFlags() *testFlags {
	f := &testFlags{fs: cli.NewFlagSet("test")}
	f.fs.BoolVarP(&f.relay, "r", "r", false, "relay from LISTEN to UPSTREAM")
	cli.ValueName(f.fs, "r", "LISTEN UPSTREAM")
	f.fs.BoolVarP(&f.debug, "d", "d", false, "debug logs")
	f.fs.StringVarP(&f.config, "c", "c", "", "read `FILE`")
	f.fs.DurationVar(&f.idle, "idle-timeout", 10*time.Minute, "end after `D`")
	f.fs.IntVar(&f.clients, "clients", 0, "at most `N` clients; 0 is no cap")
	f.fs.StringVar(&f.name, "name", "", "a name")
	f.fs.BoolVar(&f.gso, "gso", true, "use GSO")
	return f
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want testFlags
		rest []string
	}{
		{"flags between arguments", []string{"-r", "a", "--idle-timeout", "5m", "b", "-d"},
			testFlags{relay: true, debug: true, idle: 5 * time.Minute, gso: true}, []string{"a", "b"}},
		{"= and grouped letters", []string{"--idle-timeout=1s", "-rd", "-cFILE", "--gso=false"},
			testFlags{relay: true, debug: true, config: "FILE", idle: time.Second}, nil},
		{"Go's one dash", []string{"-idle-timeout", "2s", "-clients=3", "-c", "f"},
			testFlags{config: "f", idle: 2 * time.Second, clients: 3, gso: true}, nil},
		{"a value that looks like a flag", []string{"--name", "-idle-timeout", "-c", "-clients"},
			testFlags{name: "-idle-timeout", config: "-clients", idle: 10 * time.Minute, gso: true}, nil},
		{"after --", []string{"-d", "--", "-idle-timeout", "x"},
			testFlags{debug: true, idle: 10 * time.Minute, gso: true}, []string{"-idle-timeout", "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTestFlags()
			if err := cli.Parse(f.fs, tt.args); err != nil {
				t.Fatal(err)
			}
			got := *f
			got.fs = nil
			if got != tt.want {
				t.Errorf("parsed %+v, want %+v", got, tt.want)
			}
			if !slices.Equal(f.fs.Args(), tt.rest) {
				t.Errorf("arguments %q, want %q", f.fs.Args(), tt.rest)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		args []string
		msg  string
	}{
		{[]string{"--nope"}, "flag provided but not defined: --nope"},
		{[]string{"--nope=1"}, "flag provided but not defined: --nope"},
		{[]string{"-bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"-rx"}, "flag provided but not defined: -x"},
		{[]string{"--idle-timeout"}, "--idle-timeout needs a value"},
		{[]string{"-c"}, "-c needs a value"},
		{[]string{"--idle-timeout", "soon"}, `--idle-timeout: "soon" is not a duration (like 90s, 10m, 1h)`},
		{[]string{"-idle-timeout=soon"}, `--idle-timeout: "soon" is not a duration (like 90s, 10m, 1h)`},
		{[]string{"--clients", "many"}, `--clients: "many" is not a whole number`},
		{[]string{"--gso=maybe"}, `--gso: "maybe": want true or false`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			err := cli.Parse(newTestFlags().fs, tt.args)
			if err == nil || err.Error() != tt.msg {
				t.Fatalf("error %v, want %q", err, tt.msg)
			}
		})
	}
	for _, h := range []string{"-h", "--help"} {
		if err := cli.Parse(newTestFlags().fs, []string{"a", h}); !errors.Is(err, pflag.ErrHelp) {
			t.Errorf("%s: %v, want pflag.ErrHelp", h, err)
		}
	}
}

func TestPrintFlags(t *testing.T) {
	var b bytes.Buffer
	cli.PrintFlags(&b, newTestFlags().fs)
	want := []string{
		"  -r LISTEN UPSTREAM     relay from LISTEN to UPSTREAM",
		"  -d                     debug logs",
		"  -c FILE                read FILE",
		"      --idle-timeout D   end after D (default 10m)",
		"      --clients N        at most N clients; 0 is no cap",
		"      --name string      a name",
		"      --gso              use GSO (default true)",
		"  -h, --help             show this help",
	}
	if got := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n"); !slices.Equal(got, want) {
		t.Errorf("help:\n%s\nwant:\n%s", b.String(), strings.Join(want, "\n"))
	}
}
