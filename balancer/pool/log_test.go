package pool

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/checker"
)

func keysOf(rec map[string]any) []string {
	var ks []string
	for k := range rec {
		if k != "time" && k != "level" && k != "msg" {
			ks = append(ks, k)
		}
	}
	slices.Sort(ks)
	return ks
}

// TestLogSinkRecords: each event that is an eviction-log record is written
// with the contract's message, level and keys (DESIGN.md, "Eviction log").
func TestLogSinkRecords(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	base := event.Event{Time: t0, Cluster: "orders", Address: "10.0.0.1:1", Source: "config", Check: checker.ModeWatch,
		Healthy: 1, Total: 2}
	with := func(kind event.Kind, f func(*event.Event)) event.Event {
		ev := base
		ev.Kind = kind
		if f != nil {
			f(&ev)
		}
		return ev
	}
	tests := []struct {
		ev    event.Event
		msg   string // "" for no record
		level string
		keys  []string
		want  map[string]any
	}{
		{with(event.EndpointAdded, nil), MsgAdded, "INFO", []string{"cluster", "endpoint", "source"}, map[string]any{"source": "config"}},
		{with(event.EndpointAdded, func(e *event.Event) { e.Startup = true }), "", "", nil, nil},
		{with(event.EndpointRemoved, func(e *event.Event) { e.DrainTimeout = 10 * time.Second }), MsgRemoved, "INFO",
			[]string{"cluster", "drain_timeout", "endpoint", "source"}, map[string]any{"drain_timeout": "10s"}},
		{with(event.EndpointAdmitted, nil), MsgAdmitted, "INFO", []string{"check", "cluster", "endpoint"}, map[string]any{"check": "watch"}},
		{with(event.EndpointEvicted, func(e *event.Event) { e.Status = notServing; e.Healthy = 0 }), MsgEvicted, "WARN",
			[]string{"check", "cluster", "endpoint", "failures", "healthy", "reason", "total"},
			map[string]any{"reason": "NOT_SERVING", "failures": 1.0, "healthy": 0.0, "total": 2.0}},
		{with(event.EndpointEvicted, func(e *event.Event) {
			e.Status, e.Hint, e.Err = refused, "a hint", errors.New("connection refused")
		}), MsgEvicted, "WARN", []string{"check", "cluster", "endpoint", "error", "failures", "healthy", "hint", "reason", "total"},
			map[string]any{"reason": "UNAVAILABLE", "hint": "a hint", "error": "connection refused", "failures": 3.0}},
		{with(event.EndpointReadmitted, nil), MsgReadmitted, "INFO", []string{"check", "cluster", "endpoint", "healthy", "total"}, nil},
		{with(event.ClusterPanic, func(e *event.Event) {
			e.Address, e.Routable, e.Settings = "", 2, &event.Settings{PanicThreshold: 50}
		}), MsgPanic, "WARN", []string{"cluster", "healthy", "panic_threshold", "routable", "total"}, map[string]any{"panic_threshold": 50.0}},
		{with(event.ClusterRecovered, func(e *event.Event) { e.Address = "" }), MsgRecovered, "INFO", []string{"cluster", "healthy", "total"}, nil},
		{with(event.EndpointUpdated, nil), "", "", nil, nil},
		{with(event.EndpointChanged, nil), "", "", nil, nil},
		{with(event.PickerBuilt, nil), "", "", nil, nil},
		{with(event.ClusterServing, nil), "", "", nil, nil},
		{with(event.ClusterConfigured, nil), "", "", nil, nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v %s", tt.ev.Kind, tt.msg), func(t *testing.T) {
			var log jsonLog
			LogSink(slog.New(slog.NewJSONHandler(&log, nil))).Handle([]event.Event{tt.ev})
			recs := log.records(t, "")
			if tt.msg == "" {
				if len(recs) != 0 {
					t.Fatalf("records %v, want none", recs)
				}
				return
			}
			if len(recs) != 1 {
				t.Fatalf("records %v, want one", recs)
			}
			rec := recs[0]
			if rec["msg"] != tt.msg || rec["level"] != tt.level || !slices.Equal(keysOf(rec), tt.keys) {
				t.Errorf("record %v: want %s %s with keys %v", rec, tt.level, tt.msg, tt.keys)
			}
			if rec["cluster"] != "orders" {
				t.Errorf("record %v: cluster", rec)
			}
			for k, v := range tt.want {
				if rec[k] != v {
					t.Errorf("record %v: %s = %v, want %v", rec, k, rec[k], v)
				}
			}
		})
	}
}

// TestLogSinkFlapping: every transition of a flapping endpoint is a
// record, and a summary comes once the endpoint made ten within ten
// seconds, then at most once per ten seconds.
func TestLogSinkFlapping(t *testing.T) {
	var log jsonLog
	sink := LogSink(slog.New(slog.NewJSONHandler(&log, nil)))
	t0 := time.Unix(1_700_000_000, 0)
	flip := func(i int, at time.Time) {
		ev := event.Event{Kind: event.EndpointEvicted, Time: at, Cluster: "c", Address: "a:1", Check: checker.ModeWatch, Status: notServing}
		if i%2 == 1 {
			ev.Kind, ev.Status = event.EndpointReadmitted, healthy
		}
		sink.Handle([]event.Event{ev})
	}
	for i := range 9 { // 9 transitions in 9 s: no summary yet
		flip(i, t0.Add(time.Duration(i)*time.Second))
	}
	if n := len(log.records(t, MsgFlapping)); n != 0 {
		t.Fatalf("%d summaries after 9 transitions", n)
	}
	flip(9, t0.Add(9500*time.Millisecond))
	sums := log.records(t, MsgFlapping)
	if len(sums) != 1 {
		t.Fatalf("%d summaries after 10 transitions, want 1", len(sums))
	}
	want := map[string]any{"evictions": 5.0, "readmissions": 5.0, "over": "9.5s", "health": "healthy", "check": "watch"}
	for k, v := range want {
		if sums[0][k] != v {
			t.Errorf("summary %v: %s = %v, want %v", sums[0], k, sums[0][k], v)
		}
	}
	for i := range 100 { // 100 more within the next 9 s: no second summary
		flip(i, t0.Add(10*time.Second+time.Duration(i)*90*time.Millisecond))
	}
	if n := len(log.records(t, MsgFlapping)); n != 1 {
		t.Errorf("%d summaries within one window, want 1", n)
	}
	total := len(log.records(t, MsgEvicted)) + len(log.records(t, MsgReadmitted))
	if total != 110 {
		t.Errorf("%d transition records for 110 transitions", total)
	}
}
