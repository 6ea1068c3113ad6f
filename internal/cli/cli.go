// Package cli is the one way udpfwd, udpbench and warpsim read their
// command lines, on github.com/spf13/pflag: flags may come before, between
// or after the arguments; long flags take two dashes (--idle-timeout 5m,
// --idle-timeout=5m) and single-letter ones one (-r, -c FILE); a long flag
// written with one dash, as Go's flag package took it, is read as the
// same flag. Errors are one line that names the flag as it was written,
// and help prints in aligned columns.
//
// A single-letter flag is registered with the letter as both its name and
// its shorthand (fs.BoolP("r", "r", ...)): it then reads as -r, and the
// help shows it so.
package cli

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

// NewFlagSet returns a flag set for the command name that reports errors
// to the caller (Parse) instead of printing them or exiting, and keeps its
// flags in the order they are defined. It has -h, --help, which the help
// lists last.
func NewFlagSet(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	fs.Usage = func() {}
	fs.BoolP(helpFlag, "h", false, "show this help")
	return fs
}

const (
	// helpFlag is the name of the help flag NewFlagSet defines.
	helpFlag = "help"
	// valueName is the annotation with which ValueName names a flag's
	// value in the help.
	valueName = "cli_value_name"
)

// ValueName sets how the help names the value of flag, for a switch whose
// value is the command's arguments ("-r LISTEN UPSTREAM").
func ValueName(fs *pflag.FlagSet, flag, name string) {
	if err := fs.SetAnnotation(flag, valueName, []string{name}); err != nil {
		panic(err) // a flag the program did not define
	}
}

// Parse parses args into fs. It returns pflag.ErrHelp for -h or --help,
// or an error of one line naming the flag as the user wrote it.
func Parse(fs *pflag.FlagSet, args []string) error {
	err := fs.Parse(goStyle(fs, args))
	if err == nil {
		if help, _ := fs.GetBool(helpFlag); help {
			return pflag.ErrHelp
		}
		return nil
	}
	if errors.Is(err, pflag.ErrHelp) {
		return err
	}
	var notExist *pflag.NotExistError
	var noValue *pflag.ValueRequiredError
	var invalid *pflag.InvalidValueError
	switch {
	case errors.As(err, &notExist):
		as := "--" + notExist.GetSpecifiedName()
		if group := notExist.GetSpecifiedShortnames(); group != "" {
			as = "-" + group
		}
		return fmt.Errorf("flag provided but not defined: %s", as)
	case errors.As(err, &noValue):
		as := "--" + noValue.GetSpecifiedName()
		if noValue.GetSpecifiedShortnames() != "" {
			as = "-" + noValue.GetSpecifiedName()
		}
		return fmt.Errorf("%s needs a value", as)
	case errors.As(err, &invalid):
		f := invalid.GetFlag()
		return fmt.Errorf("%s: %s", written(f), invalidValue(f, invalid.GetValue(), invalid.Unwrap()))
	}
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return errors.New(msg)
}

// written is how f is written on a command line: "-r" for a single-letter
// flag, else "--name".
func written(f *pflag.Flag) string {
	if len(f.Name) == 1 {
		return "-" + f.Name
	}
	return "--" + f.Name
}

// invalidValue says why value is not one for f, in the words of its type.
func invalidValue(f *pflag.Flag, value string, cause error) string {
	switch f.Value.Type() {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return fmt.Sprintf("%q is not a whole number", value)
	case "float32", "float64":
		return fmt.Sprintf("%q is not a number", value)
	case "duration":
		return fmt.Sprintf("%q is not a duration (like 90s, 10m, 1h)", value)
	case "bool":
		return fmt.Sprintf("%q: want true or false", value)
	}
	if cause == nil {
		return strconv.Quote(value)
	}
	return cause.Error()
}

// goStyle rewrites a long flag written with one dash ("-idle-timeout 5m",
// as Go's flag package reads it) to two, so that pflag does not read it as
// a group of single-letter flags. It leaves alone the value of a flag
// that takes one, and everything after "--".
func goStyle(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	takesValue := false
	for i, a := range args {
		if takesValue {
			out = append(out, a)
			takesValue = false
			continue
		}
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) < 2 || a[0] != '-' {
			out = append(out, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := fs.Lookup(name)
		if f == nil && len(name) == 1 {
			f = fs.ShorthandLookup(name)
		}
		if f != nil && !strings.HasPrefix(a, "--") && len(name) > 1 {
			a = "-" + a
		}
		out = append(out, a)
		takesValue = f != nil && !hasValue && f.NoOptDefVal == "" && (strings.HasPrefix(a, "--") || len(name) == 1)
	}
	return out
}

// PrintFlags writes fs's flags in two aligned columns: how each is written,
// with the name of its value, and its help, with its default when the
// help does not already say it. A `word` in back quotes in the help names
// the value, as in pflag and Go's flag package.
func PrintFlags(w io.Writer, fs *pflag.FlagSet) {
	type row struct{ left, text string }
	var rows []row
	width := 0
	add := func(f *pflag.Flag) {
		name, usage := pflag.UnquoteUsage(f)
		left := "      --" + f.Name
		switch {
		case len(f.Name) == 1:
			left = "  -" + f.Name
		case f.Shorthand != "":
			left = "  -" + f.Shorthand + ", --" + f.Name
		}
		if n := f.Annotations[valueName]; len(n) > 0 {
			name = n[0]
		}
		if name != "" {
			left += " " + name
		}
		if d := f.DefValue; !isZero(d) && !strings.Contains(usage, "default") {
			if f.Value.Type() == "duration" { // "10m", not "10m0s"
				if strings.HasSuffix(d, "m0s") {
					d = strings.TrimSuffix(d, "0s")
				}
				if strings.HasSuffix(d, "h0m") {
					d = strings.TrimSuffix(d, "0m")
				}
			}
			usage += " (default " + d + ")"
		}
		rows = append(rows, row{left, usage})
		width = max(width, len(left))
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden && f.Name != helpFlag {
			add(f)
		}
	})
	if f := fs.Lookup(helpFlag); f != nil {
		add(f)
	}
	for _, r := range rows {
		fmt.Fprintf(w, "%-*s   %s\n", width, r.left, r.text)
	}
}

// isZero reports a default not worth showing: off, empty or zero.
func isZero(d string) bool {
	switch d {
	case "", "0", "0s", "false", "[]", "<nil>":
		return true
	}
	return false
}
