package checker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/status"
)

// Eviction-log messages (DESIGN.md, "Eviction log").
const (
	msgAdmitted      = "endpoint admitted"
	msgEvicted       = "endpoint evicted"
	msgReadmitted    = "endpoint readmitted"
	msgFlapping      = "endpoint flapping"
	msgServedAnyway  = "endpoint has no health service, serving it anyway"
	msgWatchFallback = "endpoint does not implement Watch, polling with Check"
)

const hintUnimplemented = "no grpc.health.v1 service is registered on the backend: register one, or set on_unimplemented: serve"

// hint explains, in one line, a failure that is usually a mistake on the
// backend; "" when there is nothing to add.
func hint(st Status, service string) string {
	if st.Cause != CauseAnswer {
		return ""
	}
	switch st.Reason {
	case reasonUnimplemented:
		return hintUnimplemented
	case reasonNotFound, reasonServiceUnknown:
		return fmt.Sprintf("the backend has no health status for service %q: names match exactly, and \"\" is the whole server", service)
	}
	return ""
}

// flapPolicy rate-limits the eviction-log records of each endpoint, so that
// a backend flipping between SERVING and NOT_SERVING many times a second
// cannot flood the log. The rule:
//
//   - The admitted, evicted and readmitted records of one endpoint draw from
//     a token bucket that holds Burst tokens and gains one every Refill: by
//     default a burst of 5 records, then one every 5 s.
//   - A transition that finds the bucket empty is applied and reported to
//     OnChange and OnProbe as always, but not logged: it is counted.
//   - Summary after the first suppressed transition, one WARN record
//     "endpoint flapping" reports what was suppressed since, with keys
//     cluster, endpoint, check, suppressed (how many transitions),
//     evictions, readmissions, over (from the first suppressed transition to
//     the summary), health (the endpoint's health now) and healthy/total
//     (the cluster's counts now). Counting then starts again.
//   - A pending summary is logged at once when the endpoint is removed or
//     the group is closed.
//
// A continuous flap thus logs about one transition and one summary per
// endpoint every 5 s, and the log always ends with the endpoint's real
// health.
type flapPolicy struct {
	Burst   float64
	Refill  time.Duration
	Summary time.Duration
}

var defaultFlapPolicy = flapPolicy{Burst: 5, Refill: 5 * time.Second, Summary: 5 * time.Second}

// flapState is one endpoint's token bucket and suppressed-record counts;
// guarded by Group.emitMu.
type flapState struct {
	tokens float64
	filled time.Time // when tokens was last brought up to date

	suppressed, evictions, readmissions int
	first                               time.Time // first suppressed transition
	mode                                Mode      // mode of the latest suppressed transition
	timer                               *time.Timer
}

// allow takes a token if there is one.
func (f *flapState) allow(p flapPolicy, now time.Time) bool {
	if f.filled.IsZero() {
		f.tokens = p.Burst
	} else if p.Refill > 0 {
		f.tokens = min(p.Burst, f.tokens+float64(now.Sub(f.filled))/float64(p.Refill))
	}
	f.filled = now
	if f.tokens >= 1 {
		f.tokens--
		return true
	}
	return false
}

// logTransitionLocked writes the record of one transition, or counts it if
// the endpoint's record budget is spent; g.emitMu must be held.
func (g *Group) logTransitionLocked(ep *endpoint, mode Mode, cfg Config, tr Transition, st Status, cause error, healthy, total int, now time.Time) {
	f := &ep.flap
	if !f.allow(g.flap, now) {
		if f.suppressed == 0 {
			f.first = now
		}
		f.suppressed++
		switch tr {
		case Evicted:
			f.evictions++
		case Readmitted:
			f.readmissions++
		}
		f.mode = mode
		if f.timer == nil {
			g.summaries.Add(1)
			f.timer = time.AfterFunc(g.flap.Summary, func() { g.summaryDue(ep) })
		}
		return
	}
	ctx := context.Background()
	cluster, endpoint, check := slog.String("cluster", g.cluster), slog.String("endpoint", ep.address), slog.String("check", string(mode))
	switch tr {
	case Admitted:
		g.logger.LogAttrs(ctx, slog.LevelInfo, msgAdmitted, cluster, endpoint, check)
	case Evicted:
		attrs := []slog.Attr{cluster, endpoint, check,
			slog.String("reason", st.Reason), slog.Int("failures", st.Failures),
			slog.Int("healthy", healthy), slog.Int("total", total)}
		if h := hint(st, cfg.Service); h != "" {
			attrs = append(attrs, slog.String("hint", h))
		}
		if cause != nil {
			// What the reason alone cannot say: refused or reset, which
			// timeout, what a garbage answer looked like.
			attrs = append(attrs, slog.String("error", errorText(cause)))
		}
		g.logger.LogAttrs(ctx, slog.LevelWarn, msgEvicted, attrs...)
	case Readmitted:
		g.logger.LogAttrs(ctx, slog.LevelInfo, msgReadmitted, cluster, endpoint, check,
			slog.Int("healthy", healthy), slog.Int("total", total))
	}
}

// summaryDue runs when an endpoint's summary timer fires.
func (g *Group) summaryDue(ep *endpoint) {
	defer g.summaries.Done()
	g.emitMu.Lock()
	defer g.emitMu.Unlock()
	if ep.flap.timer == nil {
		return // flushed by Remove or Close meanwhile
	}
	ep.flap.timer = nil
	g.logSummaryLocked(ep)
}

// flushFlapLocked logs ep's pending summary now, if any; g.emitMu must be
// held.
func (g *Group) flushFlapLocked(ep *endpoint) {
	f := &ep.flap
	if f.timer == nil {
		return
	}
	if f.timer.Stop() {
		g.summaries.Done() // the callback will not run
	}
	f.timer = nil
	g.logSummaryLocked(ep)
}

func (g *Group) logSummaryLocked(ep *endpoint) {
	f := &ep.flap
	if f.suppressed == 0 {
		return
	}
	g.mu.RLock()
	health := ep.status.Health
	healthy, total := g.healthy, len(g.endpoints)
	g.mu.RUnlock()
	g.logger.LogAttrs(context.Background(), slog.LevelWarn, msgFlapping,
		slog.String("cluster", g.cluster), slog.String("endpoint", ep.address), slog.String("check", string(f.mode)),
		slog.Int("suppressed", f.suppressed), slog.Int("evictions", f.evictions), slog.Int("readmissions", f.readmissions),
		slog.String("over", time.Since(f.first).Round(time.Millisecond).String()),
		slog.String("health", health.String()),
		slog.Int("healthy", healthy), slog.Int("total", total))
	f.suppressed, f.evictions, f.readmissions = 0, 0, 0
}

// errorText is err for the log: a gRPC status error by its message alone,
// since the reason already names its code.
func errorText(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}
