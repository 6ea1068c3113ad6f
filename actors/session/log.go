package session

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// The session's lines carry its fields (session, client), added when a line
// is written rather than kept in a child logger (see Config.Logger): a
// session writes few lines, and most sessions none at all.

// logger returns the relay's logger with the session's fields, for the line
// at hand. Forward mode's one session has no client and no fields.
func (s *Session) logger() *zap.Logger {
	if s.cfg.Forward {
		return s.cfg.Logger
	}
	return s.cfg.Logger.With(s.fields()...)
}

// debug writes a debug line with the session's fields, if debug lines are
// written at all; otherwise it costs a level check.
func (s *Session) debug(msg string, fields ...zap.Field) {
	if ce := s.cfg.Logger.Check(zapcore.DebugLevel, msg); ce != nil {
		if !s.cfg.Forward {
			fields = append(s.fields(), fields...)
		}
		ce.Write(fields...)
	}
}

// fields are the session's own log fields. A plain client (zero ID) is
// named "plain", as the supervisor names it.
func (s *Session) fields() []zap.Field {
	info := &s.cfg.Info
	if info.Client.IsZero() {
		return []zap.Field{zap.String("session", info.Session.String()), zap.String("client", "plain")}
	}
	return []zap.Field{zap.String("session", info.Session.String()),
		zap.Stringer("client", info.Client), zap.String("client_b64", info.Client.Base64())}
}
