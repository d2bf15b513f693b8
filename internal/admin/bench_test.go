package admin

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/state"
)

// BenchmarkClusters answers GET /clusters over 100 clusters of 10
// endpoints each, with stats.
func BenchmarkClusters(b *testing.B) {
	s, err := state.New()
	if err != nil {
		b.Fatal(err)
	}
	err = s.Update(func(w state.Writer) error {
		for c := range 100 {
			name := fmt.Sprintf("cluster-%03d", c)
			if err := w.UpsertCluster(&state.Cluster{Name: name, LBPolicy: string(config.RoundRobin)}); err != nil {
				return err
			}
			for e := range 10 {
				ep := &state.Endpoint{Cluster: name, Address: fmt.Sprintf("10.0.%d.%d:50051", c, e), Weight: 1,
					Check: checker.ModeCheck, Status: checker.Status{Health: checker.Healthy, Since: t0}}
				if err := w.UpsertEndpoint(ep); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	stats := func(string, string) (EndpointStats, bool) {
		return EndpointStats{LastProbe: t0, LastLatency: time.Millisecond, Inflight: 1}, true
	}
	h := New(Options{Store: s, Stats: stats}).Handler()
	req := httptest.NewRequest(http.MethodGet, "/clusters", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}

// BenchmarkEventRender renders one eviction record as an SSE event.
func BenchmarkEventRender(b *testing.B) {
	st := &stream{}
	st.jsonLog = slog.NewJSONHandler(&st.record, nil)
	ev := &state.Event{Seq: 42, Time: t0, Level: slog.LevelWarn, Msg: "endpoint evicted", Attrs: []slog.Attr{
		slog.String("cluster", "orders"), slog.String("endpoint", "127.0.0.1:50052"), slog.String("check", "watch"),
		slog.String("reason", "NOT_SERVING"), slog.Int("failures", 1), slog.Int("healthy", 1), slog.Int("total", 2),
	}}
	b.ReportAllocs()
	for b.Loop() {
		if err := st.event(ev); err != nil {
			b.Fatal(err)
		}
		_, _ = io.Discard.Write(st.buf.Bytes())
		st.buf.Reset()
	}
}
