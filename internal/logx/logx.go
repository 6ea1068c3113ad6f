// Package logx builds the process's one zap logger from the command-line
// settings, and bridges protoactor's log/slog output into it.
//
// Under systemd, when stderr is the journal (JOURNAL_STREAM names it), the
// console format leaves the time stamp to the journal and starts each line
// with its syslog priority ("<6>INFO ..."), which journald reads as the
// entry's PRIORITY (sd-daemon(3)): `journalctl -p warning` then works.
// The JSON format is the same everywhere.
package logx

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"
	"go.uber.org/zap/zapcore"
)

// Sampling keeps a flood of one message from flooding the log: per message
// and level, the first samplingFirst lines in each second are written, then
// one in samplingThereafter. Entries of the audit logger (Audit) are never
// sampled.
const (
	samplingFirst      = 10
	samplingThereafter = 1000
)

// AuditName is the name of the audit logger (Audit): it shows in each of its
// lines (the console form's logger column, JSON's "logger" key), so that
// the audit trail can be picked out of the log.
const AuditName = "audit"

// Audit returns l as the audit logger, named AuditName: a logger built by
// New writes every one of its entries, never sampling them. It is for the
// sessions' lifecycle lines (opened, roamed, expired, failed, closed,
// restored), an audit trail that must be whole; their rate is bounded by
// the relay's admission budget, not by sampling. Everything else, drop
// warnings first, stays sampled.
func Audit(l *zap.Logger) *zap.Logger { return l.Named(AuditName) }

// isAudit reports whether an entry of the logger named name belongs to the
// audit trail: the audit logger, or one named below or above it (names are
// joined with dots).
func isAudit(name string) bool {
	for name != "" {
		var seg string
		seg, name, _ = strings.Cut(name, ".")
		if seg == AuditName {
			return true
		}
	}
	return false
}

// auditCore samples every entry but those of the audit logger, which go to
// the core beneath unsampled. The sampler decides in Check, from the entry
// alone, so the mark is the logger's name.
type auditCore struct {
	sampled, all zapcore.Core
}

func (c auditCore) Enabled(l zapcore.Level) bool { return c.all.Enabled(l) }

func (c auditCore) With(fs []zapcore.Field) zapcore.Core {
	return auditCore{sampled: c.sampled.With(fs), all: c.all.With(fs)}
}

func (c auditCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if isAudit(e.LoggerName) {
		return c.all.Check(e, ce)
	}
	return c.sampled.Check(e, ce)
}

// Write is called only for a core that added itself in Check, which
// auditCore never does: its cores add themselves.
func (c auditCore) Write(e zapcore.Entry, fs []zapcore.Field) error { return c.all.Write(e, fs) }

func (c auditCore) Sync() error { return c.all.Sync() }

// Options select the logger.
type Options struct {
	Level  string // debug, info, warn, error
	Format string // console or json
}

// Validate reports an unknown level or format.
func (o Options) Validate() error {
	if _, err := zapcore.ParseLevel(o.Level); err != nil {
		return fmt.Errorf("log level %q: want debug, info, warn or error", o.Level)
	}
	switch o.Format {
	case "console", "json":
		return nil
	}
	return fmt.Errorf("log format %q: want console or json", o.Format)
}

// New builds a sampled logger writing to stderr, in the journal's console
// form if stderr is the journal. Its audit logger (Audit) is not sampled.
func New(o Options) (*zap.Logger, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return build(o, os.Stderr, underJournal(os.Getenv("JOURNAL_STREAM"), os.Stderr)), nil
}

// NewTo builds the logger New builds, writing to out in the ordinary
// (not the journal's) form: for tests of what reaches the log, sampling
// included, and for programs that log elsewhere than stderr.
func NewTo(o Options, out zapcore.WriteSyncer) (*zap.Logger, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return build(o, out, false), nil
}

// build is New writing to out; journal selects the journal's console form.
func build(o Options, out zapcore.WriteSyncer, journal bool) *zap.Logger {
	level, _ := zapcore.ParseLevel(o.Level)
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	switch {
	case o.Format == "json":
		enc = zapcore.NewJSONEncoder(ec)
	case journal:
		// The journal stamps each line itself; the level comes first, so
		// the priority prefix starts the line.
		ec.TimeKey = zapcore.OmitKey
		ec.EncodeLevel = journalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	}
	out = zapcore.Lock(out)
	core := zapcore.NewCore(enc, out, level)
	sampled := zapcore.NewSamplerWithOptions(core, time.Second, samplingFirst, samplingThereafter)
	return zap.New(auditCore{sampled: sampled, all: core}, zap.ErrorOutput(out))
}

// underJournal reports whether f is the journal's stream: JOURNAL_STREAM
// ("DEVICE:INODE", set by systemd for a service whose output goes to the
// journal) names f's device and inode. Comparing them, as sd-daemon(3)
// advises, keeps a program started from such a service with its own
// output (a terminal, a file) in the ordinary form.
func underJournal(env string, f *os.File) bool {
	dev, ino, ok := strings.Cut(env, ":")
	if !ok {
		return false
	}
	d, err1 := strconv.ParseUint(dev, 10, 64)
	i, err2 := strconv.ParseUint(ino, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == d && uint64(st.Ino) == i
}

// journalLevel writes a level as its syslog priority prefix (sd-daemon(3):
// debug 7, info 6, warn 4, error 3; the levels above error 2, critical),
// which journald strips and stores as the entry's priority, then the level
// for people reading the message: "<6>INFO".
func journalLevel(l zapcore.Level) string {
	switch {
	case l <= zapcore.DebugLevel:
		return "<7>DEBUG"
	case l == zapcore.InfoLevel:
		return "<6>INFO"
	case l == zapcore.WarnLevel:
		return "<4>WARN"
	case l == zapcore.ErrorLevel:
		return "<3>ERROR"
	}
	return "<2>" + l.CapitalString()
}

func journalLevelEncoder(l zapcore.Level, enc zapcore.PrimitiveArrayEncoder) {
	enc.AppendString(journalLevel(l))
}

// Slog returns a log/slog logger that writes into l, for libraries such as
// protoactor-go that log through slog. protoactor logs routine lifecycle
// chatter at INFO; it is shifted one level down so that it shows with -d.
func Slog(l *zap.Logger) *slog.Logger {
	return slog.New(demote{zapslog.NewHandler(l.Core(), zapslog.WithName("actor"))})
}

// demote lowers INFO records to DEBUG.
type demote struct{ slog.Handler }

func (d demote) Enabled(ctx context.Context, l slog.Level) bool {
	return d.Handler.Enabled(ctx, lower(l))
}

func (d demote) Handle(ctx context.Context, r slog.Record) error {
	r.Level = lower(r.Level)
	return d.Handler.Handle(ctx, r)
}

func (d demote) WithAttrs(as []slog.Attr) slog.Handler { return demote{d.Handler.WithAttrs(as)} }
func (d demote) WithGroup(n string) slog.Handler       { return demote{d.Handler.WithGroup(n)} }

func lower(l slog.Level) slog.Level {
	if l == slog.LevelInfo {
		return slog.LevelDebug
	}
	return l
}
