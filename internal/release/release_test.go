package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestReleaseBuildsAndSums builds two targets into a temporary directory
// and checks the binaries (static ELF for the right machine, reporting the
// version given) against SHA256SUMS. The first run on a machine compiles
// everything for both platforms, a few minutes on 2 cores.
func TestReleaseBuildsAndSums(t *testing.T) {
	if testing.Short() {
		t.Skip("builds udpfwd twice; not in -short")
	}
	dir := t.TempDir()
	var log bytes.Buffer
	const version = "v0.0.0-releasetest"
	if err := run([]string{"-o", dir, "-targets", "arm64,amd64", "-version", version}, &log); err != nil {
		t.Fatalf("release: %v\n%s", err, log.String())
	}

	f, err := os.Open(filepath.Join(dir, sumsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			t.Fatalf("%s line %q is not \"SHA256  NAME\"", sumsFile, sc.Text())
		}
		got, err := fileSum(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got != sum {
			t.Errorf("%s: sum %s, %s says %s", name, got, sumsFile, sum)
		}
		names = append(names, name)
	}
	if want := []string{"udpfwd-linux-amd64", "udpfwd-linux-arm64"}; !slices.Equal(names, want) {
		t.Errorf("%s lists %v, want %v (in build order)", sumsFile, names, want)
	}

	machines := map[string]elf.Machine{"udpfwd-linux-amd64": elf.EM_X86_64, "udpfwd-linux-arm64": elf.EM_AARCH64}
	for name, machine := range machines {
		e, err := elf.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if e.Machine != machine {
			t.Errorf("%s is for %v, want %v", name, e.Machine, machine)
		}
		for _, p := range e.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has an interpreter: not static", name)
			}
		}
		e.Close()
	}
	if runtime.GOOS == "linux" && runtime.GOARCH == "amd64" {
		out, err := exec.Command(filepath.Join(dir, "udpfwd-linux-amd64"), "--version").Output()
		if err != nil || string(out) != "udpfwd "+version+"\n" {
			t.Errorf("udpfwd-linux-amd64 --version: %q %v, want %q", out, err, "udpfwd "+version)
		}
	}
}

func TestTargets(t *testing.T) {
	env := func(name string) []string {
		i := slices.IndexFunc(targets, func(t target) bool { return t.name == name })
		if i < 0 {
			t.Fatalf("no target %s", name)
		}
		return buildEnv(targets[i])
	}
	// The last value of a variable wins in exec; check what the build sees.
	last := func(e []string, key string) string {
		v := ""
		for _, kv := range e {
			if k, val, _ := strings.Cut(kv, "="); k == key {
				v = val
			}
		}
		return v
	}
	t.Setenv("CGO_ENABLED", "1")
	t.Setenv("GOARM", "6")
	tests := []struct{ target, goarch, variantKey, variant string }{
		{"amd64", "amd64", "", ""},
		{"arm64", "arm64", "", ""},
		{"armv7", "arm", "GOARM", "7"},
		{"mips", "mips", "GOMIPS", "softfloat"},
		{"mipsle", "mipsle", "GOMIPS", "softfloat"},
		{"riscv64", "riscv64", "", ""},
	}
	if len(tests) != len(targets) {
		t.Errorf("%d targets, %d checked here", len(targets), len(tests))
	}
	for _, tt := range tests {
		e := env(tt.target)
		if last(e, "GOOS") != "linux" || last(e, "GOARCH") != tt.goarch || last(e, "CGO_ENABLED") != "0" {
			t.Errorf("%s: GOOS %s GOARCH %s CGO_ENABLED %s", tt.target, last(e, "GOOS"), last(e, "GOARCH"), last(e, "CGO_ENABLED"))
		}
		if tt.variantKey != "" && last(e, tt.variantKey) != tt.variant {
			t.Errorf("%s: %s=%s, want %s", tt.target, tt.variantKey, last(e, tt.variantKey), tt.variant)
		}
	}

	if _, err := pick("amd64,sparc"); err == nil || !strings.Contains(err.Error(), `"sparc"`) {
		t.Errorf("pick(amd64,sparc) = %v, want an error naming sparc", err)
	}
	got, err := pick("riscv64,amd64,amd64")
	if err != nil || len(got) != 2 || got[0].name != "amd64" || got[1].name != "riscv64" {
		t.Errorf("pick(riscv64,amd64,amd64) = %v, %v; want amd64, riscv64", got, err)
	}
	if err := run([]string{"-targets", "sparc"}, &bytes.Buffer{}); err == nil {
		t.Error("run accepted an unknown target")
	}
}
