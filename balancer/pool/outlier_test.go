package pool

import (
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/vigil-proxy/vigil/balancer/outlier"
	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/checker"
)

// outlierPool is a pool without goroutines of its own whose outlier work
// the test does at the times it chooses.
type outlierPool struct {
	*Pool
	t   *testing.T
	now time.Time
	log *jsonLog
	rec *recorder
}

func newOutlierPool(t *testing.T, cfg outlier.Config, addrs ...string) *outlierPool {
	t.Helper()
	log, rec := &jsonLog{}, &recorder{}
	p := newPool("c", Options{Sinks: []event.Sink{rec, LogSink(slog.New(slog.NewJSONHandler(log, nil)))}}, false)
	t.Cleanup(p.Close)
	p.Apply(Spec{HealthCheck: none(), Endpoints: endpoints(addrs...), Outlier: &cfg})
	for _, a := range addrs {
		p.setHealth(a, healthy)
	}
	p.build()
	return &outlierPool{Pool: p, t: t, now: time.Now(), log: log, rec: rec}
}

// fail reports n failures of addr and runs the outlier work due.
func (o *outlierPool) fail(addr string, n int, code codes.Code) {
	o.mu.Lock()
	ep := o.members[addr].ep
	o.mu.Unlock()
	for range n {
		ep.Report(code)
	}
	o.advance(0)
}

func (o *outlierPool) advance(d time.Duration) {
	o.now = o.now.Add(d)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reviewOutliersLocked(o.now)
}

func (o *outlierPool) ejected(addr string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.members[addr].ej.Ejected
}

func TestConsecutiveFailuresEject(t *testing.T) {
	cfg := outlier.DefaultConfig()
	cfg.ConsecutiveFailures, cfg.BaseEjectionTime, cfg.Interval = 3, time.Second, time.Hour
	o := newOutlierPool(t, cfg, "10.0.0.1:1", "10.0.0.2:1")
	bad := "10.0.0.1:1"

	o.fail(bad, 2, codes.Unavailable)
	o.fail(bad, 5, codes.Canceled)         // the client's doing: not counted
	o.fail(bad, 5, codes.DeadlineExceeded) // neither
	if o.ejected(bad) {
		t.Fatal("ejected after 2 failures and client cancellations")
	}
	o.fail(bad, 1, codes.Internal)
	if !o.ejected(bad) {
		t.Fatal("not ejected after 3 failures in a row")
	}
	if got := picks(o.Pool, 100); got[bad] != 0 {
		t.Fatalf("the ejected endpoint was picked: %v", got)
	}
	recs := o.log.records(t, MsgEvicted)
	if len(recs) != 1 || recs[0]["check"] != "outlier" || recs[0]["reason"] != "INTERNAL" || recs[0]["ejection"] != "1s" ||
		recs[0]["failures"] != float64(3) {
		t.Fatalf("eviction records %v", recs)
	}
	st := o.Endpoints()[0]
	if st.Status.Health != checker.Unhealthy || st.Ejection.Duration() != time.Second || st.Routable {
		t.Fatalf("ejected endpoint's state %+v", st)
	}

	o.advance(999 * time.Millisecond)
	if !o.ejected(bad) {
		t.Fatal("readmitted before the ejection time")
	}
	o.advance(time.Millisecond)
	if o.ejected(bad) {
		t.Fatal("still ejected after the ejection time")
	}
	if got := picks(o.Pool, 100); got[bad] == 0 {
		t.Fatalf("the readmitted endpoint was not picked: %v", got)
	}
	if recs := o.log.records(t, MsgReadmitted); len(recs) != 1 || recs[0]["check"] != "outlier" {
		t.Fatalf("readmission records %v", recs)
	}

	// Still failing: ejected again, for twice as long.
	o.fail(bad, 3, codes.Unavailable)
	if recs := o.log.records(t, MsgEvicted); len(recs) != 2 || recs[1]["ejection"] != "2s" {
		t.Fatalf("second ejection's records %v", recs)
	}
	o.advance(2 * time.Second)
	if o.ejected(bad) {
		t.Fatal("second ejection did not end after 2s")
	}
	// Successes reset the run.
	o.fail(bad, 2, codes.Unavailable)
	o.fail(bad, 1, codes.OK)
	o.fail(bad, 2, codes.Unavailable)
	if o.ejected(bad) {
		t.Fatal("ejected though a success broke the run")
	}
}

// TestEjectionEndNeedsTheCheck: an endpoint the active check evicted
// while it was ejected stays out when the ejection ends, and is
// readmitted by the check.
func TestEjectionEndNeedsTheCheck(t *testing.T) {
	cfg := outlier.DefaultConfig()
	cfg.ConsecutiveFailures, cfg.BaseEjectionTime, cfg.Interval = 1, time.Second, time.Hour
	cfg.MaxEjectionPercent = 100
	o := newOutlierPool(t, cfg, "10.0.0.1:1", "10.0.0.2:1")
	bad := "10.0.0.1:1"
	o.fail(bad, 1, codes.Unavailable)
	o.setHealth(bad, notServing) // the check evicts it meanwhile
	o.setHealth(bad, healthy)    // and passes again: still ejected
	if !o.ejected(bad) || o.log.count(t, MsgReadmitted) != 0 || o.log.count(t, MsgEvicted) != 1 {
		t.Fatalf("during the ejection: ejected %v, %d evicted, %d readmitted records", o.ejected(bad),
			o.log.count(t, MsgEvicted), o.log.count(t, MsgReadmitted))
	}
	o.setHealth(bad, notServing)
	o.advance(time.Second)
	if got := picks(o.Pool, 100); got[bad] != 0 {
		t.Fatalf("an endpoint the check holds unhealthy was picked after its ejection: %v", got)
	}
	if n := o.log.count(t, MsgReadmitted); n != 0 {
		t.Fatalf("%d readmitted records while the check says NOT_SERVING", n)
	}
	o.setHealth(bad, healthy)
	if got := picks(o.Pool, 100); got[bad] == 0 {
		t.Fatalf("not picked after the check passed: %v", got)
	}
	if recs := o.log.records(t, MsgReadmitted); len(recs) != 1 || recs[0]["check"] != "none" {
		t.Fatalf("readmission records %v", recs)
	}
}

// TestMaxEjectionPercent: with 3 of 4 failing and max_ejection_percent
// 50, two are ejected and the third keeps its traffic; the share frees up
// as ejections end. With one endpoint, it may be ejected (panic, if on,
// then sends it traffic again).
func TestMaxEjectionPercent(t *testing.T) {
	cfg := outlier.DefaultConfig()
	cfg.ConsecutiveFailures, cfg.BaseEjectionTime, cfg.Interval = 2, time.Second, time.Hour
	cfg.MaxEjectionPercent = 50
	o := newOutlierPool(t, cfg, "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1")
	for _, a := range []string{"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"} {
		o.fail(a, 2, codes.Unavailable)
	}
	if !o.ejected("10.0.0.1:1") || !o.ejected("10.0.0.2:1") || o.ejected("10.0.0.3:1") {
		t.Fatal("want the first two ejected, the third held back by the 50% bound")
	}
	// Held back, it trips again after another run once there is room.
	o.advance(time.Second)
	o.fail("10.0.0.3:1", 2, codes.Unavailable)
	if !o.ejected("10.0.0.3:1") {
		t.Fatal("the third not ejected once the share allowed it")
	}

	one := newOutlierPool(t, cfg, "10.0.0.9:1")
	one.fail("10.0.0.9:1", 2, codes.Unavailable)
	if !one.ejected("10.0.0.9:1") {
		t.Fatal("a cluster of one: its endpoint may be ejected")
	}
	if healthy, total, _ := one.Counts(); healthy != 0 || total != 1 {
		t.Fatalf("counts %d/%d", healthy, total)
	}
}

func TestFailurePercentageEjects(t *testing.T) {
	cfg := outlier.DefaultConfig()
	cfg.ConsecutiveFailures, cfg.FailurePercentage, cfg.MinimumRequests = 0, 50, 20
	cfg.Interval, cfg.BaseEjectionTime, cfg.MaxEjectionPercent = time.Second, time.Second, 100
	o := newOutlierPool(t, cfg, "10.0.0.1:1", "10.0.0.2:1")
	o.mu.Lock()
	bad, good := o.members["10.0.0.1:1"].ep, o.members["10.0.0.2:1"].ep
	o.nextReview = o.now.Add(time.Second)
	o.mu.Unlock()
	for i := range 100 {
		if i%10 == 0 {
			bad.Report(codes.OK)
		} else {
			bad.Report(codes.Unavailable) // 90% failing, never 5 in a row... and no consecutive rule
		}
		good.Report(codes.OK)
	}
	o.advance(500 * time.Millisecond)
	if o.ejected("10.0.0.1:1") {
		t.Fatal("ejected before the interval ended")
	}
	o.advance(500 * time.Millisecond)
	if !o.ejected("10.0.0.1:1") || o.ejected("10.0.0.2:1") {
		t.Fatal("want the endpoint failing 90 percent ejected at the end of the interval, and only it")
	}
	if recs := o.log.records(t, MsgEvicted); len(recs) != 1 || recs[0]["rule"] != "failure_percentage" || recs[0]["failures"] != float64(90) {
		t.Fatalf("records %v", recs)
	}
}

// TestReloadKeepsEjections: a change of settings keeps the ejection in
// force and its end; turning outlier detection off ends it.
func TestReloadKeepsEjections(t *testing.T) {
	cfg := outlier.DefaultConfig()
	cfg.ConsecutiveFailures, cfg.BaseEjectionTime = 1, time.Minute
	o := newOutlierPool(t, cfg, "10.0.0.1:1", "10.0.0.2:1")
	o.fail("10.0.0.1:1", 1, codes.Unavailable)
	spec := o.spec
	changed := cfg
	changed.ConsecutiveFailures = 7
	spec.Outlier = &changed
	if plan := o.Apply(spec); !plan.OutlierChanged {
		t.Fatalf("plan %+v", plan)
	}
	if !o.ejected("10.0.0.1:1") {
		t.Fatal("a change of settings ended the ejection")
	}
	spec.Outlier = nil
	o.Apply(spec)
	if o.ejected("10.0.0.1:1") {
		t.Fatal("still ejected with outlier detection off")
	}
	if got := picks(o.Pool, 100); got["10.0.0.1:1"] == 0 {
		t.Fatalf("not picked once outlier detection is off: %v", got)
	}
}
