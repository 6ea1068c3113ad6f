package main

import (
	"strings"

	"github.com/udpfwd/udpfwd/internal/config"
)

// This file builds the one configuration (internal/config) from the
// command line: the relay of -r, the rules of -f or the file of -c, then
// the flags given, which set the file's keys with the keys' own parse
// functions.

// flagValues holds a config flag's values as the user gave them, one per
// time the flag was given: internal/config parses them (File.SetFlag), with
// the same functions and messages as the file's keys.
type flagValues struct {
	values   []string
	def      string // the default the help shows
	isSwitch bool   // takes no value (--no-gso)
}

func (v *flagValues) String() string {
	if len(v.values) == 0 {
		return v.def
	}
	return strings.Join(v.values, ",")
}

func (v *flagValues) Set(s string) error { v.values = append(v.values, s); return nil }

func (v *flagValues) Type() string {
	if v.isSwitch {
		return "bool"
	}
	return "string"
}

// IsBoolFlag lets a switch be given without a value.
func (v *flagValues) IsBoolFlag() bool { return v.isSwitch }

// config builds the configuration the command line asks for: the relay
// of -r, the rules of -f or the file of -c, with the flags given over it,
// validated once. Problems are usage errors (exit 2); warnings are for the
// caller to show.
func (o *options) config() (*config.File, []*config.Error, error) {
	var f *config.File
	var err error
	switch {
	case o.configFile != "":
		f, err = config.Read(o.configFile)
	case o.relay:
		f, err = config.FromArgs(o.args[0], o.args[1])
	default:
		f, err = config.ReadForward(o.forwardFile)
	}
	if err != nil {
		return nil, nil, usageError{err}
	}
	for _, cf := range config.Flags() {
		if o.fs.Changed(cf.Name) {
			if err := f.SetFlag(cf.Name, o.settings[cf.Name].values...); err != nil {
				return nil, nil, usageError{err}
			}
		}
	}
	if o.debug {
		if err := f.SetFlag("log-level", "debug"); err != nil {
			return nil, nil, usageError{err}
		}
	}
	warnings, err := f.Validate()
	if err != nil {
		return nil, nil, usageError{err}
	}
	return f, warnings, nil
}
