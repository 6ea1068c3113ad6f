package logx

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// buffer is a zapcore.WriteSyncer over a bytes.Buffer.
type buffer struct{ bytes.Buffer }

func (b *buffer) Sync() error { return nil }

func logAll(l *zap.Logger) {
	l.Debug("debug line", zap.Int("n", 1))
	l.Info("session opened", zap.String("client", "a81a15"))
	l.Warn("socket buffer smaller than asked")
	l.Error("session failed", zap.String("reason", "panic"))
}

func TestJournalFormat(t *testing.T) {
	var b buffer
	logAll(build(Options{Level: "debug", Format: "console"}, &b, true))
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	want := []string{
		"<7>DEBUG\tdebug line\t{\"n\": 1}",
		"<6>INFO\tsession opened\t{\"client\": \"a81a15\"}",
		"<4>WARN\tsocket buffer smaller than asked",
		"<3>ERROR\tsession failed\t{\"reason\": \"panic\"}",
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), b.String())
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("line %d:\n got %q\nwant %q", i, lines[i], want[i])
		}
	}
	for _, l := range []zapcore.Level{zapcore.DPanicLevel, zapcore.PanicLevel, zapcore.FatalLevel} {
		if got := journalLevel(l); !strings.HasPrefix(got, "<2>") {
			t.Errorf("%v: %q, want priority 2", l, got)
		}
	}
}

// Outside the journal the console form keeps its time stamp and has no
// priority prefix; JSON is the same in and out of the journal.
func TestOtherFormatsUnchanged(t *testing.T) {
	stamp := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d{4})\s`)
	var console buffer
	logAll(build(Options{Level: "info", Format: "console"}, &console, false))
	for _, line := range strings.Split(strings.TrimSuffix(console.String(), "\n"), "\n") {
		if !stamp.MatchString(line) || strings.Contains(line, "<6>") {
			t.Errorf("console line %q: want a time stamp first and no priority", line)
		}
	}
	for _, journal := range []bool{false, true} {
		var js buffer
		logAll(build(Options{Level: "info", Format: "json"}, &js, journal))
		for _, line := range strings.Split(strings.TrimSuffix(js.String(), "\n"), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("journal %v: not JSON: %q", journal, line)
			}
			if _, ok := m["ts"]; !ok || strings.HasPrefix(line, "<") {
				t.Errorf("journal %v: JSON line %q changed", journal, line)
			}
		}
	}
}

func TestUnderJournal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, env string
		want      bool
	}{
		{name: "this stream", env: fmt.Sprintf("%d:%d", st.Dev, st.Ino), want: true},
		{name: "unset", env: ""},
		{name: "another inode (a child of a service, its stderr elsewhere)", env: fmt.Sprintf("%d:%d", st.Dev, st.Ino+1)},
		{name: "garbage", env: "journal"},
		{name: "not numbers", env: "a:b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := underJournal(tt.env, f); got != tt.want {
				t.Errorf("underJournal(%q) = %v, want %v", tt.env, got, tt.want)
			}
		})
	}
}

// The audit trail is whole: 5 000 lifecycle lines in one second all reach
// the output, through a child logger with fields too, while 5 000 identical
// warnings are sampled down to a few.
func TestAuditNeverSampled(t *testing.T) {
	for _, format := range []string{"console", "json"} {
		t.Run(format, func(t *testing.T) {
			var b buffer
			l := build(Options{Level: "info", Format: format}, &b, false)
			audit := Audit(l.With(zap.String("relay", "r1")))
			const n = 5000
			for i := range n {
				audit.Info("session opened", zap.Int("i", i))
			}
			if got := strings.Count(b.String(), "session opened"); got != n {
				t.Fatalf("%d of %d lifecycle lines written", got, n)
			}
			if !strings.Contains(b.String(), AuditName) || !strings.Contains(b.String(), "r1") {
				t.Fatalf("an audit line does not name its logger or lost its fields: %q", strings.SplitN(b.String(), "\n", 2)[0])
			}
			b.Reset()
			for range n {
				l.Warn("policy did not answer; asking again")
			}
			if got := strings.Count(b.String(), "policy did not answer"); got >= samplingFirst+n/samplingThereafter+2 {
				t.Fatalf("%d of %d identical warnings written: not sampled", got, n)
			} else if got < samplingFirst {
				t.Fatalf("%d identical warnings written, want the first %d at least", got, samplingFirst)
			}
			b.Reset()
			audit.Debug("session closed") // the audit logger keeps the level
			if b.Len() != 0 {
				t.Fatalf("a debug line was written at level info: %q", b.String())
			}
		})
	}
}

func TestIsAudit(t *testing.T) {
	for name, want := range map[string]bool{
		"": false, "audit": true, "x.audit": true, "audit.y": true, "x.audit.y": true,
		"auditor": false, "x.auditor": false, "reaudit": false, "actor": false,
	} {
		if got := isAudit(name); got != want {
			t.Errorf("isAudit(%q) = %v, want %v", name, got, want)
		}
	}
}
