// Command release cross-builds udpfwd for the machines its operators run
// it on (servers, ARM boards, OpenWrt routers) and writes their SHA-256
// sums, so that a release is one command from a tagged checkout:
//
//	go run ./internal/release                 # every target into dist/
//	go run ./internal/release -o out -targets amd64,arm64 -version v1.2.3
//
// Binaries are static (CGO_ENABLED=0), built with -trimpath, stripped, and
// report the version given, or else `git describe --tags --always --dirty`
// of the checkout (-ldflags -X main.version). SHA256SUMS in the output
// directory lists them in the form `sha256sum -c` reads.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// target is one platform a release is built for.
type target struct {
	name string   // in -targets and the binary's name: udpfwd-linux-NAME
	env  []string // GOOS, GOARCH and the variant (GOARM, GOMIPS)
}

// targets are every platform a release has, in the order they are built.
// armv7 is the 32-bit ARM of most boards and routers still sold; the MIPS
// routers that run OpenWrt mostly have no FPU, hence soft float.
var targets = []target{
	{"amd64", []string{"GOOS=linux", "GOARCH=amd64"}},
	{"arm64", []string{"GOOS=linux", "GOARCH=arm64"}},
	{"armv7", []string{"GOOS=linux", "GOARCH=arm", "GOARM=7"}},
	{"mips", []string{"GOOS=linux", "GOARCH=mips", "GOMIPS=softfloat"}},
	{"mipsle", []string{"GOOS=linux", "GOARCH=mipsle", "GOMIPS=softfloat"}},
	{"riscv64", []string{"GOOS=linux", "GOARCH=riscv64"}},
}

// pkg is what a release ships.
const pkg = "./cmd/udpfwd"

// sumsFile is the name of the sums file in the output directory.
const sumsFile = "SHA256SUMS"

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		var ue usageError
		fmt.Fprintf(os.Stderr, "release: %v\n", err)
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError is a wrong command line: exit 2.
type usageError struct{ error }

// run builds the targets the command line asks for; progress goes to log.
func run(args []string, log io.Writer) error {
	fs := flag.NewFlagSet("release", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	out := fs.String("o", "dist", "write binaries and "+sumsFile+" to `DIR`")
	version := fs.String("version", "", "the `VERSION` binaries report (default: git describe --tags --always --dirty)")
	only := fs.String("targets", "", "comma-separated `TARGETS` to build (default: all of "+targetNames()+")")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(log, "Usage: go run ./internal/release [-o DIR] [-version VERSION] [-targets %s]\n", targetNames())
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	chosen, err := pick(*only)
	if err != nil {
		return usageError{err}
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if *version == "" {
		if *version, err = describe(root); err != nil {
			return err
		}
	}
	dir, err := filepath.Abs(*out)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var sums strings.Builder
	for _, t := range chosen {
		name := "udpfwd-linux-" + t.name
		fmt.Fprintf(log, "release: %s %s\n", name, *version)
		if err := build(root, filepath.Join(dir, name), t, *version); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		sum, err := fileSum(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		fmt.Fprintf(&sums, "%s  %s\n", sum, name)
	}
	if err := os.WriteFile(filepath.Join(dir, sumsFile), []byte(sums.String()), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(log, "release: %d binaries and %s in %s\n", len(chosen), sumsFile, dir)
	return nil
}

func targetNames() string {
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.name
	}
	return strings.Join(names, ",")
}

// pick returns the targets named in list, in build order; "" is all.
func pick(list string) ([]target, error) {
	if list == "" {
		return targets, nil
	}
	var chosen []target
	for _, n := range strings.Split(list, ",") {
		i := slices.IndexFunc(targets, func(t target) bool { return t.name == strings.TrimSpace(n) })
		if i < 0 {
			return nil, fmt.Errorf("unknown target %q: want some of %s", n, targetNames())
		}
		if !slices.ContainsFunc(chosen, func(t target) bool { return t.name == targets[i].name }) {
			chosen = append(chosen, targets[i])
		}
	}
	slices.SortFunc(chosen, func(a, b target) int {
		return slices.IndexFunc(targets, func(t target) bool { return t.name == a.name }) -
			slices.IndexFunc(targets, func(t target) bool { return t.name == b.name })
	})
	return chosen, nil
}

// buildEnv is the environment of one target's build: the caller's, with
// cgo off and the target's platform last, so that they win.
func buildEnv(t target) []string {
	return append(os.Environ(), append([]string{"CGO_ENABLED=0"}, t.env...)...)
}

// build compiles pkg for t into path.
func build(root, path string, t target, version string) error {
	cmd := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-s -w -buildid= -X main.version="+version,
		"-o", path, pkg)
	cmd.Dir = root
	cmd.Env = buildEnv(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build: %v: %s", err, strings.ReplaceAll(strings.TrimSpace(stderr.String()), "\n", "; "))
	}
	return nil
}

// moduleRoot is the directory of udpfwd's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the udpfwd module: run this from the checkout")
	}
	return filepath.Dir(mod), nil
}

// describe is the checkout's version: its tag, or the tag and the commits
// since, or the commit alone when there is no tag; "-dirty" with changes.
func describe(root string) (string, error) {
	cmd := exec.Command("git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git describe: %v (pass -version to set the version)", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// fileSum is the SHA-256 of the file at path, in hex.
func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
