package discovery

import (
	"context"
	"log/slog"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

// SetClientLogger sends what client-go logs (through klog) to logger at
// DEBUG, with component=client-go, instead of klog's own lines on stderr.
// Its informer logs every failed list or watch retry; vigil reports
// failures itself (`discovery failed` once per streak), so these are
// details for debugging. Verbose klog records (V(1) and up) are dropped.
// klog's logger is process-wide: vigil run calls this once.
func SetClientLogger(logger *slog.Logger) {
	klog.SetLogger(logr.FromSlogHandler(clientHandler{logger.Handler().WithAttrs([]slog.Attr{slog.String("component", "client-go")})}))
}

// clientHandler lowers client-go's records to DEBUG and drops its verbose
// ones (which logr hands over below INFO).
type clientHandler struct{ next slog.Handler }

func (h clientHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= slog.LevelInfo && h.next.Enabled(ctx, slog.LevelDebug)
}

func (h clientHandler) Handle(ctx context.Context, r slog.Record) error {
	if !h.next.Enabled(ctx, slog.LevelDebug) {
		return nil // logr hands errors over without asking Enabled
	}
	r.Level = slog.LevelDebug
	return h.next.Handle(ctx, r)
}

func (h clientHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return clientHandler{h.next.WithAttrs(attrs)}
}

func (h clientHandler) WithGroup(name string) slog.Handler {
	return clientHandler{h.next.WithGroup(name)}
}
