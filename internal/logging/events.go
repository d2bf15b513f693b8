package logging

import (
	"context"
	"log/slog"
	"slices"

	"github.com/vigil-proxy/vigil/internal/state"
)

// EventSink receives eviction-log records.
type EventSink interface {
	AppendEvent(e *state.Event) (uint64, error)
}

// EventLog returns the handler of the eviction log: it passes every record
// to next and appends every record at INFO or above to sink, even when
// next's level filters it out (the event stream must not depend on how
// verbose the log is). What goes through it is an event because of the
// logger it was written to, never because of what its message says: the
// pools' LogSink and the configuration's records (loaded, reloaded,
// rejected) write to it, and nothing else does.
func EventLog(next slog.Handler, sink EventSink) slog.Handler {
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
	if r.Level >= slog.LevelInfo {
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
