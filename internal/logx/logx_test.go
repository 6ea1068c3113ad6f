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
