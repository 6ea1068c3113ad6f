package relay

import (
	"bytes"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/udpfwd/udpfwd/actors/messages"
	"github.com/udpfwd/udpfwd/internal/logx"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// Lifecycle lines show a v4 client on a dual-stack socket as IPv4.
func TestLogEventUnmapsAddresses(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	l := zap.New(core)
	info := messages.SessionInfo{
		Relay:         "warp",
		Client:        wgproto.ClientID{0xa8, 0x1a, 0x15},
		ClientAddr:    netip.MustParseAddrPort("[::ffff:127.0.0.1]:51820"),
		UpstreamLocal: netip.MustParseAddrPort("[::ffff:127.0.0.1]:40001"),
		Upstream:      netip.MustParseAddrPort("[::ffff:162.159.192.1]:2408"),
	}
	logEvent(l, &messages.SessionOpened{SessionInfo: info}, info)
	logEvent(l, &messages.ClientRoamed{SessionInfo: info, From: netip.MustParseAddrPort("[::ffff:192.0.2.9]:3000")}, info)
	logEvent(l, &messages.SessionExpired{SessionInfo: info, Side: "client", Timeout: time.Minute}, info)
	logEvent(l, &messages.SessionRestored{SessionInfo: info, Rebound: true, Wanted: netip.MustParseAddrPort("[::ffff:127.0.0.1]:40000")}, info)
	six := info
	six.ClientAddr = netip.MustParseAddrPort("[2001:db8::1]:51820")
	logEvent(l, &messages.SessionClosed{SessionInfo: six}, six)

	want := []map[string]string{
		{"client_addr": "127.0.0.1:51820", "upstream": "162.159.192.1:2408"},
		{"client_addr": "127.0.0.1:51820", "from": "192.0.2.9:3000"},
		{"client_addr": "127.0.0.1:51820"},
		{"client_addr": "127.0.0.1:51820", "wanted": "127.0.0.1:40000"},
		{"client_addr": "[2001:db8::1]:51820"},
	}
	entries := logs.All()
	if len(entries) != len(want) {
		t.Fatalf("%d lines, want %d", len(entries), len(want))
	}
	for i, e := range entries {
		fields := e.ContextMap()
		for k, v := range want[i] {
			if got, _ := fields[k].(string); got != v {
				t.Errorf("%q: %s = %v, want %s", e.Message, k, fields[k], v)
			}
		}
		for k, v := range fields {
			if s, ok := v.(string); ok && strings.Contains(s, "::ffff:") {
				t.Errorf("%q: %s = %s is still v4-mapped", e.Message, k, s)
			}
		}
	}
}

// syncBuffer is a zapcore.WriteSyncer over a bytes.Buffer, safe for the
// event stream's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) Sync() error { return nil }
func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Lifecycle lines are an audit trail: through the process's own (sampled)
// logger, 5 000 of each kind in a second all reach the output, on the
// audit logger, while the relay's other lines stay sampled.
func TestLifecycleLinesNeverSampled(t *testing.T) {
	var out syncBuffer
	l, err := logx.NewTo(logx.Options{Level: "info", Format: "json"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	system := NewSystem(l)
	defer system.Shutdown()
	sub := subscribeLogger(system, "warp", l.With(zap.String("relay", "warp")))
	defer sub.close()
	info := messages.SessionInfo{Relay: "warp", Client: wgproto.ClientID{0xa8, 0x1a, 0x15},
		ClientAddr: netip.MustParseAddrPort("192.0.2.1:51820")}
	const n = 5000
	kinds := map[string]func() any{
		"session opened":   func() any { return &messages.SessionOpened{SessionInfo: info} },
		"client roamed":    func() any { return &messages.ClientRoamed{SessionInfo: info} },
		"session expired":  func() any { return &messages.SessionExpired{SessionInfo: info} },
		"session failed":   func() any { return &messages.SessionFailed{SessionInfo: info} },
		"session closed":   func() any { return &messages.SessionClosed{SessionInfo: info} },
		"session restored": func() any { return &messages.SessionRestored{SessionInfo: info} },
	}
	for range n {
		for _, evt := range kinds {
			system.EventStream.Publish(evt())
		}
		l.Warn("send upstream failed") // a drop warning: sampled
	}
	other := info
	other.Relay = "other"
	system.EventStream.Publish(&messages.SessionOpened{SessionInfo: other}) // not this relay's
	text := out.String()
	for msg := range kinds {
		if got := strings.Count(text, `"msg":"`+msg+`"`); got != n {
			t.Errorf("%d of %d %q lines written", got, n, msg)
		}
	}
	if got := strings.Count(text, `"logger":"audit"`); got != n*len(kinds) {
		t.Errorf("%d lines on the audit logger, want %d", got, n*len(kinds))
	}
	if got := strings.Count(text, "send upstream failed"); got >= n/10 {
		t.Errorf("%d of %d identical warnings written: not sampled", got, n)
	}
}

// A session that only followed its client's newest address (no WireGuard
// evidence: anyone with the client ID can make it move) is not part of the
// audit trail: logged at debug, and sampled.
func TestFollowedMovesSampled(t *testing.T) {
	var out syncBuffer
	l, err := logx.NewTo(logx.Options{Level: "debug", Format: "json"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	system := NewSystem(l)
	defer system.Shutdown()
	sub := subscribeLogger(system, "warp", l)
	defer sub.close()
	info := messages.SessionInfo{Relay: "warp", Client: wgproto.ClientID{0xa8, 0x1a, 0x15}}
	const n = 5000
	for range n {
		system.EventStream.Publish(&messages.ClientRoamed{SessionInfo: info, Followed: true})
	}
	text := out.String()
	if got := strings.Count(text, "client followed to a new address"); got == 0 || got >= n/10 {
		t.Errorf("%d of %d followed moves logged: want a sampled few", got, n)
	}
	if strings.Contains(text, `"logger":"audit"`) || strings.Contains(text, `"client roamed"`) {
		t.Error("a followed move is logged as a roam on the audit logger")
	}
}
