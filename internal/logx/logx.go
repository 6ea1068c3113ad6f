// Package logx builds the process's one zap logger from the command-line
// settings, and bridges protoactor's log/slog output into it.
package logx

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"
	"go.uber.org/zap/zapcore"
)

// Sampling keeps a flood of one message from flooding the log: per message
// and level, the first samplingFirst lines in each second are written, then
// one in samplingThereafter.
const (
	samplingFirst      = 10
	samplingThereafter = 1000
)

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

// New builds a sampled logger writing to stderr.
func New(o Options) (*zap.Logger, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	level, _ := zapcore.ParseLevel(o.Level)
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	if o.Format == "json" {
		enc = zapcore.NewJSONEncoder(ec)
	} else {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(os.Stderr), level)
	core = zapcore.NewSamplerWithOptions(core, time.Second, samplingFirst, samplingThereafter)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(os.Stderr))), nil
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
