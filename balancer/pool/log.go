package pool

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/checker"
)

// Eviction-log messages (vigil's contract: DESIGN.md, "Eviction log").
const (
	MsgAdded      = "endpoint added"
	MsgRemoved    = "endpoint removed"
	MsgDrained    = "endpoint drained"
	MsgAdmitted   = "endpoint admitted"
	MsgEvicted    = "endpoint evicted"
	MsgReadmitted = "endpoint readmitted"
	MsgFlapping   = "endpoint flapping"
	MsgPanic      = "cluster panic"
	MsgRecovered  = "cluster recovered"
)

// CheckOutlier is the check key of the records of outlier detection's
// transitions (an ejection, and the readmission at its end).
const CheckOutlier = "outlier"

// Flapping summaries: an endpoint that makes flapTransitions transitions
// within flapWindow gets one "endpoint flapping" record, at most one per
// flapWindow. Every transition is a record of its own all the same.
const (
	flapTransitions = 10
	flapWindow      = 10 * time.Second
)

// LogSink returns a sink that writes a pool's events to logger as vigil's
// eviction log: one record per transition (endpoint admitted, evicted,
// readmitted), per endpoint added (but those of the first configuration)
// or removed, and per change of panic mode, with the keys the contract
// names; nothing is left out or rate-limited. An endpoint that flaps also
// gets an "endpoint flapping" summary now and then. A LogSink may serve
// several pools.
func LogSink(logger *slog.Logger) event.Sink {
	return &logSink{logger: logger, flaps: map[flapKey]*flapWindowState{}}
}

type flapKey struct{ cluster, address string }

// flapWindowState counts one endpoint's transitions since start.
type flapWindowState struct {
	start, summarized       time.Time
	evictions, readmissions int
}

type logSink struct {
	logger *slog.Logger
	mu     sync.Mutex // guards flaps: pools call Handle concurrently
	flaps  map[flapKey]*flapWindowState
}

func (s *logSink) Handle(events []event.Event) {
	for i := range events {
		s.record(&events[i])
	}
}

func (s *logSink) record(ev *event.Event) {
	ctx := context.Background()
	cluster, endpoint := slog.String("cluster", ev.Cluster), slog.String("endpoint", ev.Address)
	check := slog.String("check", string(ev.Check))
	if ev.Outlier {
		check = slog.String("check", CheckOutlier)
	}
	switch ev.Kind {
	case event.EndpointAdded:
		if !ev.Startup {
			s.logger.LogAttrs(ctx, slog.LevelInfo, MsgAdded, cluster, endpoint, slog.String("source", ev.Source))
		}
	case event.EndpointRemoved:
		s.logger.LogAttrs(ctx, slog.LevelInfo, MsgRemoved, cluster, endpoint, slog.String("source", ev.Source),
			slog.String("drain_timeout", ev.DrainTimeout.String()))
	case event.EndpointDrained:
		s.forget(ev)
		s.logger.LogAttrs(ctx, slog.LevelDebug, MsgDrained, cluster, endpoint)
	case event.EndpointAdmitted:
		s.logger.LogAttrs(ctx, slog.LevelInfo, MsgAdmitted, cluster, endpoint, check)
	case event.EndpointEvicted:
		attrs := []slog.Attr{cluster, endpoint, check,
			slog.String("reason", ev.Status.Reason), slog.Int("failures", ev.Status.Failures),
			slog.Int("healthy", ev.Healthy), slog.Int("total", ev.Total)}
		if ev.Outlier {
			attrs = append(attrs, slog.String("ejection", ev.Ejection.Duration().String()),
				slog.String("rule", ev.Ejection.Rule), slog.Int("ejections", ev.Ejection.Count))
		}
		if ev.Hint != "" && !ev.Outlier {
			attrs = append(attrs, slog.String("hint", ev.Hint))
		}
		if ev.Err != nil && !ev.Outlier {
			// What the reason alone cannot say: refused or reset, which
			// timeout, what a garbage answer looked like.
			attrs = append(attrs, slog.String("error", checker.ErrorText(ev.Err)))
		}
		s.logger.LogAttrs(ctx, slog.LevelWarn, MsgEvicted, attrs...)
		s.flap(ev)
	case event.EndpointReadmitted:
		s.logger.LogAttrs(ctx, slog.LevelInfo, MsgReadmitted, cluster, endpoint, check,
			slog.Int("healthy", ev.Healthy), slog.Int("total", ev.Total))
		s.flap(ev)
	case event.ClusterPanic:
		attrs := []slog.Attr{cluster, slog.Int("healthy", ev.Healthy), slog.Int("total", ev.Total), slog.Int("routable", ev.Routable)}
		if ev.Settings != nil {
			attrs = append(attrs, slog.Int("panic_threshold", ev.Settings.PanicThreshold))
		}
		s.logger.LogAttrs(ctx, slog.LevelWarn, MsgPanic, attrs...)
	case event.ClusterRecovered:
		s.logger.LogAttrs(ctx, slog.LevelInfo, MsgRecovered, cluster, slog.Int("healthy", ev.Healthy), slog.Int("total", ev.Total))
	case event.ClusterRemoved:
		s.forgetCluster(ev.Cluster)
	}
}

// flap counts an eviction or readmission and writes a summary when the
// endpoint has made flapTransitions of them within flapWindow.
func (s *logSink) flap(ev *event.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := flapKey{ev.Cluster, ev.Address}
	f := s.flaps[k]
	if f == nil || ev.Time.Sub(f.start) > flapWindow {
		if f == nil {
			f = &flapWindowState{}
			s.flaps[k] = f
		}
		f.start, f.evictions, f.readmissions = ev.Time, 0, 0
	}
	if ev.Kind == event.EndpointEvicted {
		f.evictions++
	} else {
		f.readmissions++
	}
	if f.evictions+f.readmissions < flapTransitions || ev.Time.Sub(f.summarized) < flapWindow {
		return
	}
	s.logger.LogAttrs(context.Background(), slog.LevelWarn, MsgFlapping,
		slog.String("cluster", ev.Cluster), slog.String("endpoint", ev.Address), slog.String("check", string(ev.Check)),
		slog.Int("evictions", f.evictions), slog.Int("readmissions", f.readmissions),
		slog.String("over", ev.Time.Sub(f.start).Round(time.Millisecond).String()),
		slog.String("health", ev.Status.Health.String()),
		slog.Int("healthy", ev.Healthy), slog.Int("total", ev.Total))
	f.summarized, f.start, f.evictions, f.readmissions = ev.Time, ev.Time, 0, 0
}

func (s *logSink) forget(ev *event.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.flaps, flapKey{ev.Cluster, ev.Address})
}

func (s *logSink) forgetCluster(cluster string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.flaps {
		if k.cluster == cluster {
			delete(s.flaps, k)
		}
	}
}
