package logging

import (
	"context"
	"log/slog"
	"slices"

	"github.com/vigil-proxy/vigil/internal/state"
)

// EventMessages are the messages of the eviction log (the contract's table,
// plus the checker's flapping summary). Records with these messages are
// copied into the state store whatever the log level.
var EventMessages = []string{
	"endpoint added", "endpoint removed",
	"endpoint admitted", "endpoint evicted", "endpoint readmitted", "endpoint flapping",
	"cluster panic", "cluster recovered",
	"config loaded", "config reloaded", "config rejected",
}

// EventSink receives eviction-log records.
type EventSink interface {
	AppendEvent(e *state.Event) (uint64, error)
}

// Tee returns a handler that passes every record to next and also appends
// eviction-log records to sink, even when next's level filters them out: the
// event stream must not depend on how verbose the log is.
func Tee(next slog.Handler, sink EventSink) slog.Handler {
	return &teeHandler{next: next, sink: sink}
}

type teeHandler struct {
	next  slog.Handler
	sink  EventSink
	attrs []slog.Attr // from WithAttrs, with group prefixes applied
	group string      // dotted prefix from WithGroup
}

func (h *teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h *teeHandler) Handle(ctx context.Context, r slog.Record) error {
	if slices.Contains(EventMessages, r.Message) {
		attrs := make([]slog.Attr, 0, len(h.attrs)+r.NumAttrs())
		attrs = append(attrs, h.attrs...)
		r.Attrs(func(a slog.Attr) bool {
			attrs = append(attrs, h.prefixed(a))
			return true
		})
		// The event stream is best effort: a store error must not stop
		// the log record itself.
		_, _ = h.sink.AppendEvent(&state.Event{Time: r.Time, Level: r.Level, Msg: r.Message, Attrs: attrs})
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *teeHandler) prefixed(a slog.Attr) slog.Attr {
	a.Value = a.Value.Resolve()
	if h.group != "" {
		a.Key = h.group + a.Key
	}
	return a
}

func (h *teeHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := *h
	n.next = h.next.WithAttrs(attrs)
	n.attrs = slices.Clip(h.attrs)
	for _, a := range attrs {
		n.attrs = append(n.attrs, h.prefixed(a))
	}
	return &n
}

func (h *teeHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := *h
	n.next = h.next.WithGroup(name)
	n.group = h.group + name + "."
	return &n
}
