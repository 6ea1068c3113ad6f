package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// childProc is a process udpbench started (a relay or the echo server) with
// its whole tree: it runs in its own process group but in udpbench's
// session (no setsid: a new session gets its own scheduler autogroup and
// was measured to be scheduled 2-3x worse in shared benchmarks), and gets
// SIGKILL if udpbench dies.
type childProc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed when the process has been waited for
	waitErr error
}

// startChild runs argv with stdout and stderr going to logPath.
func startChild(name string, argv []string, logPath string) (*childProc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, argv[0], err)
	}
	p := &childProc{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

// pid is the process ID of the tree's root.
func (p *childProc) pid() int { return p.cmd.Process.Pid }

// running reports whether the root process has not exited.
func (p *childProc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// exitError describes how the process ended, with the tail of its log.
func (p *childProc) exitError() error {
	return fmt.Errorf("%s exited early (%v); log %s ends:\n%s", p.name, p.waitErr, p.logPath, p.logTail(15))
}

// logTail returns the last n lines of the process's output.
func (p *childProc) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// stop ends the whole tree: SIGTERM to the process group and to every
// descendant (some may have moved to another group), then SIGKILL to
// whatever is left after grace. It waits for the root to be reaped and for
// the descendants to disappear, each bounded.
func (p *childProc) stop(grace time.Duration) error {
	var tree []int
	if all, err := readAllStats("/proc"); err == nil {
		for _, s := range descendants(all, p.pid()) {
			tree = append(tree, s.pid)
		}
	}
	signalAll := func(sig syscall.Signal) {
		_ = syscall.Kill(-p.pid(), sig)
		for _, pid := range tree {
			_ = syscall.Kill(pid, sig)
		}
	}
	if p.running() {
		signalAll(syscall.SIGTERM)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
	}
	// SIGKILL the group and the descendants whether or not the root has
	// exited: socat's children or nginx's workers may outlive it.
	signalAll(syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.pid())
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range tree {
		for pid != p.pid() && processAlive(pid) {
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: descendant pid %d still alive after SIGKILL", p.name, pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", fmt.Sprint(pid), "stat"))
	if err != nil {
		return false
	}
	s, err := parseProcStat(b)
	return err == nil && s.state != 'Z' && s.state != 'X'
}
