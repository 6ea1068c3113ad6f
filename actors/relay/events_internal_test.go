package relay

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/udpfwd/udpfwd/actors/messages"
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
