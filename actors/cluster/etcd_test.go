package cluster

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// startEtcd runs Debian's etcd (package etcd-server) on free loopback ports
// in a temporary directory and returns its client URL once it serves
// clients. It skips the test only if the binary is missing.
func startEtcd(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd not installed (Debian: apt-get install etcd-server); CI installs it")
	}
	port := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", port())
	peer := fmt.Sprintf("http://127.0.0.1:%d", port())
	cmd := exec.Command(bin,
		"--name", "test",
		"--data-dir", t.TempDir(),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "test="+peer,
		"--listen-metrics-urls", "",
	)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "ready to serve client requests") {
				close(ready)
				break
			}
		}
		for sc.Scan() { // keep draining so etcd never blocks on its log
		}
	}()
	select {
	case <-ready:
	case <-time.After(eventTimeout):
		t.Fatal("etcd did not become ready")
	}
	return client
}

func TestEtcdDirectory(t *testing.T) {
	url := startEtcd(t)
	cfg := func() Config {
		return Config{Name: "etcd", Bind: freeBind(t), Etcd: []string{url}}
	}
	abc := startNodes(t, cfg(), cfg(), cfg())
	directoryLifecycle(t, abc, func() *testNode { return startNode(t, cfg()) })
}

func TestEtcdUnreachableIsAStartError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close() // nothing listens there now
	cfg := Config{Name: "etcd", Bind: freeBind(t), Etcd: []string{url}}
	if _, err := Start(newSystem(t), cfg, zapNop()); err == nil {
		t.Fatal("Start with an unreachable etcd succeeded")
	}
}
