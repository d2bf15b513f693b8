package logging

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/vigil-proxy/vigil/internal/config"
)

// Switch is the root of vigil's loggers. Its format and level can be changed
// at any time (a config reload); loggers derived with With or WithGroup
// before the change follow it.
type Switch struct {
	w     io.Writer
	level slog.LevelVar
	// base is the handler in force; gen counts its replacements so that
	// derived handlers know when to rebuild themselves.
	base atomic.Pointer[slog.Handler]
	gen  atomic.Uint64
}

// NewSwitch returns a switch writing to w in the given format and level.
func NewSwitch(w io.Writer, format config.LogFormat, level slog.Level) *Switch {
	s := &Switch{w: w}
	s.Set(format, level)
	return s
}

// Set changes the format and the level.
func (s *Switch) Set(format config.LogFormat, level slog.Level) {
	s.level.Set(level)
	opts := &slog.HandlerOptions{Level: &s.level}
	var h slog.Handler
	if format == config.LogJSON {
		h = slog.NewJSONHandler(s.w, opts)
	} else {
		h = slog.NewTextHandler(s.w, opts)
	}
	s.base.Store(&h)
	s.gen.Add(1)
}

// Level is the level in force.
func (s *Switch) Level() slog.Level { return s.level.Level() }

// Handler returns a handler that logs through whatever format is in force.
func (s *Switch) Handler() slog.Handler { return &switchHandler{sw: s} }

// op is one With or WithGroup applied to a derived handler.
type op struct {
	attrs []slog.Attr
	group string
}

type builtHandler struct {
	gen uint64
	h   slog.Handler
}

type switchHandler struct {
	sw    *Switch
	ops   []op
	built atomic.Pointer[builtHandler]
}

func (h *switchHandler) current() slog.Handler {
	gen := h.sw.gen.Load()
	if b := h.built.Load(); b != nil && b.gen == gen {
		return b.h
	}
	cur := *h.sw.base.Load()
	for _, o := range h.ops {
		if o.group != "" {
			cur = cur.WithGroup(o.group)
		} else {
			cur = cur.WithAttrs(o.attrs)
		}
	}
	h.built.Store(&builtHandler{gen: gen, h: cur})
	return cur
}

func (h *switchHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.sw.level.Level() }

func (h *switchHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.current().Handle(ctx, r)
}

func (h *switchHandler) with(o op) *switchHandler {
	ops := make([]op, len(h.ops), len(h.ops)+1)
	copy(ops, h.ops)
	return &switchHandler{sw: h.sw, ops: append(ops, o)}
}

func (h *switchHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	return h.with(op{attrs: attrs})
}

func (h *switchHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return h.with(op{group: name})
}

// ParseLevel turns a config level name into a slog level.
func ParseLevel(name string) slog.Level {
	switch name {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}
