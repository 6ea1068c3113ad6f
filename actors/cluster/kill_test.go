package cluster

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/asynkron/protoactor-go/actor"
)

// nodeEnv makes the test binary a child node for the SIGKILL tests: its
// bind, the peers, and how many sessions to register.
const nodeEnv = "UDPFWD_CLUSTER_CHILD_NODE"

// TestChildNode is a node in a child process, killed by its parent; it
// skips unless run as one.
func TestChildNode(t *testing.T) {
	spec := os.Getenv(nodeEnv)
	if spec == "" {
		t.Skip("runs only as a child of the SIGKILL tests")
	}
	f := strings.Split(spec, ";")
	var peers []netip.AddrPort
	for _, p := range strings.Split(f[1], ",") {
		peers = append(peers, netip.MustParseAddrPort(p))
	}
	sessions, _ := strconv.Atoi(f[2])
	n := startNode(t, Config{Name: "kill", Bind: netip.MustParseAddrPort(f[0]), Peers: peers})
	for i := range sessions {
		pid, _ := spawnSink(n, 1)
		if _, err := n.Register(clientID(i), pid); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("READY")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until killed
}

// startChild runs a node in a child process and waits until it has
// registered its sessions. Kill it with cmd.Process.Kill (SIGKILL).
func startChild(t *testing.T, self netip.AddrPort, peers []netip.AddrPort, sessions int) *exec.Cmd {
	t.Helper()
	var ps []string
	for _, p := range peers {
		ps = append(ps, p.String())
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildNode$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s;%s;%d", nodeEnv, self, strings.Join(ps, ","), sessions))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		stdin.Close()
		_ = cmd.Wait()
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "READY" {
				ready <- true
			}
		}
		ready <- false
	}()
	if !<-ready {
		t.Fatal("child node ended before it was ready")
	}
	return cmd
}

// TestSIGKILL kills nodes in child processes abruptly, with no chance to
// leave: killing a non-owner changes nothing for the owner's sessions, and
// killing the owner drops its sessions from every directory.
func TestSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	a, b, c := freeBind(t), freeBind(t), freeBind(t)
	binds := []netip.AddrPort{a, b, c}
	cfgs := staticConfigs("kill", binds...)

	t.Run("a killed non-owner changes nothing", func(t *testing.T) {
		ab := startNodes(t, cfgs[0], cfgs[1])
		child := startChild(t, c, binds, 0)
		waitMembersAt(t, ab, a.String(), b.String(), c.String())
		pids := sessionsOn(t, ab[0], 24)
		expectLookups(t, ab, pids)
		if err := child.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		waitMembers(t, ab, ab...)
		expectLookups(t, ab, pids)
		expectAlive(t, ab[0], pids)
		closeNodes(ab...)
	})

	t.Run("a killed owner takes its sessions with it", func(t *testing.T) {
		// New ports, so that nothing of the first cluster answers.
		a, b, c := freeBind(t), freeBind(t), freeBind(t)
		binds := []netip.AddrPort{a, b, c}
		cfgs := staticConfigs("kill", binds...)
		bc := startNodes(t, cfgs[1], cfgs[2])
		const sessions = 24
		child := startChild(t, a, binds, sessions)
		waitMembersAt(t, bc, a.String(), b.String(), c.String())
		for _, n := range bc {
			for i := range sessions {
				if p := n.Lookup(clientID(i)); p == nil || p.Address != a.String() {
					t.Fatalf("%s: Lookup(%s) = %v, want a session on %s", n.Address(), clientID(i), p, a)
				}
			}
		}
		if err := child.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		waitMembers(t, bc, bc...)
		expectLookups(t, bc, make([]*actor.PID, sessions))
	})
}
