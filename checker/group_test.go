package checker

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
)

var (
	admittedKeys   = []string{"cluster", "endpoint", "check"}
	evictedKeys    = []string{"cluster", "endpoint", "check", "reason", "failures", "healthy", "total"}
	readmittedKeys = []string{"cluster", "endpoint", "check", "healthy", "total"}
)

func fastConfig(mode Mode) Config {
	return Config{
		Mode: mode, Interval: 20 * time.Millisecond, Timeout: 2 * time.Second, Jitter: 0.1,
		Thresholds: Thresholds{Unhealthy: 3, Healthy: 2},
	}
}

// testGroup builds a group whose warnings go to a JSON sink and whose
// changes are collected; every transition is also written to the sink as
// the eviction-log record it makes (recordChange), so that tests check
// that a Change carries everything the record needs. It is closed at
// cleanup.
func testGroup(t *testing.T, cfg Config, probed func(string, Result)) (*Group, *logSink, *changeLog) {
	t.Helper()
	logger, sink := newLogger()
	changes := &changeLog{}
	onChange := func(ch Change) {
		changes.add(ch)
		recordChange(logger, ch)
	}
	g := NewGroup(cfg, GroupOptions{Cluster: "orders", Logger: logger, OnChange: onChange, OnProbe: probed})
	t.Cleanup(g.Close)
	return g, sink, changes
}

func waitHealth(t *testing.T, g *Group, addr string, h Health) Status {
	t.Helper()
	var st Status
	waitFor(t, addr+" to be "+h.String(), func() bool {
		st, _ = g.Status(addr)
		return st.Health == h
	})
	return st
}

// waitRecords waits until n records with msg were logged and returns them.
func waitRecords(t *testing.T, sink *logSink, msg string, n int) []map[string]any {
	t.Helper()
	var recs []map[string]any
	waitFor(t, "record "+msg, func() bool {
		recs = sink.withMsg(t, msg)
		return len(recs) >= n
	})
	return recs
}

func TestGroupCheckLifecycle(t *testing.T) {
	b := startBackend(t, "", nil)
	g, sink, changes := testGroup(t, fastConfig(ModeCheck), nil)
	g.Add(b.addr, Status{Health: Pending})

	waitHealth(t, g, b.addr, Healthy)
	rec := waitRecords(t, sink, "endpoint admitted", 1)[0]
	checkRecord(t, rec, "INFO", admittedKeys, map[string]any{"cluster": "orders", "endpoint": b.addr, "check": "check"})
	if h, n := g.Counts(); h != 1 || n != 1 {
		t.Errorf("Counts = %d/%d, want 1/1", h, n)
	}

	// An answered NOT_SERVING evicts at the next probe.
	b.set("", healthgrpc.HealthCheckResponse_NOT_SERVING)
	st := waitHealth(t, g, b.addr, Unhealthy)
	if st.Reason != "NOT_SERVING" || st.Cause != CauseAnswer || st.PanicEligible() {
		t.Errorf("after NOT_SERVING: %+v", st)
	}
	rec = waitRecords(t, sink, "endpoint evicted", 1)[0]
	checkRecord(t, rec, "WARN", evictedKeys, map[string]any{"endpoint": b.addr, "check": "check", "reason": "NOT_SERVING", "failures": 1, "healthy": 0, "total": 1})

	b.set("", healthgrpc.HealthCheckResponse_SERVING)
	waitHealth(t, g, b.addr, Healthy)
	rec = waitRecords(t, sink, "endpoint readmitted", 1)[0]
	checkRecord(t, rec, "INFO", readmittedKeys, map[string]any{"endpoint": b.addr, "check": "check", "healthy": 1, "total": 1})

	// A dead backend is evicted after three transport failures.
	b.srv.Stop()
	st = waitHealth(t, g, b.addr, Unhealthy)
	if st.Reason != "UNAVAILABLE" || st.Cause != CauseTransport || !st.PanicEligible() {
		t.Errorf("after stop: %+v", st)
	}
	rec = waitRecords(t, sink, "endpoint evicted", 2)[1]
	checkRecord(t, rec, "WARN", evictedKeys, map[string]any{"reason": "UNAVAILABLE", "failures": 3, "healthy": 0, "total": 1})

	startBackend(t, b.addr, nil)
	waitHealth(t, g, b.addr, Healthy)
	waitRecords(t, sink, "endpoint readmitted", 2)

	want := []Transition{Admitted, Evicted, Readmitted, Evicted, Readmitted}
	if got := changes.transitions(b.addr); !slices.Equal(got, want) {
		t.Errorf("transitions %v, want %v", got, want)
	}
}

// TestGroupRecoveredBackendSeenAtNextProbe checks that a backend that comes
// back is seen by the very next probe, however long it was down: no
// reconnect backoff and no stale TRANSIENT_FAILURE in between.
func TestGroupRecoveredBackendSeenAtNextProbe(t *testing.T) {
	b := startBackend(t, "", nil)
	var mu sync.Mutex
	var restarted time.Time
	var failedAfter, failedBefore atomic.Int64
	probed := func(_ string, r Result) {
		start := time.Now().Add(-r.Latency)
		mu.Lock()
		defer mu.Unlock()
		if r.OK {
			return
		}
		if !restarted.IsZero() && start.After(restarted) {
			failedAfter.Add(1)
		} else {
			failedBefore.Add(1)
		}
	}
	g, _, _ := testGroup(t, fastConfig(ModeCheck), probed)
	g.Add(b.addr, Status{Health: Pending})
	waitHealth(t, g, b.addr, Healthy)
	b.srv.Stop()
	waitHealth(t, g, b.addr, Unhealthy)
	// Enough failed probes for grpc-go's own backoff to have grown.
	waitFor(t, "15 failed probes", func() bool { return failedBefore.Load() >= 15 })

	startBackend(t, b.addr, nil)
	mu.Lock()
	restarted = time.Now()
	mu.Unlock()
	waitHealth(t, g, b.addr, Healthy)
	if n := failedAfter.Load(); n != 0 {
		t.Errorf("%d probes started after the backend was back failed; want none", n)
	}
}

func TestGroupPendingNeverStaysSilent(t *testing.T) {
	lis := listen(t, "")
	addr := lis.Addr().String()
	_ = lis.Close()
	g, sink, _ := testGroup(t, fastConfig(ModeCheck), nil)
	g.Add(addr, Status{Health: Pending})
	st := waitHealth(t, g, addr, Unhealthy)
	if st.Failures != 3 || st.Reason != "UNAVAILABLE" {
		t.Errorf("status %+v, want 3 failures UNAVAILABLE", st)
	}
	rec := waitRecords(t, sink, "endpoint evicted", 1)[0]
	checkRecord(t, rec, "WARN", evictedKeys, map[string]any{"reason": "UNAVAILABLE", "failures": 3, "healthy": 0, "total": 1})
}

func TestGroupHints(t *testing.T) {
	t.Run("unregistered service", func(t *testing.T) {
		b := startBackend(t, "", nil)
		cfg := fastConfig(ModeCheck)
		cfg.Service = "orders.v1.Orders"
		g, sink, _ := testGroup(t, cfg, nil)
		g.Add(b.addr, Status{})
		rec := waitRecords(t, sink, "endpoint evicted", 1)[0]
		checkRecord(t, rec, "WARN", append(evictedKeys, "hint"), map[string]any{"reason": "NOT_FOUND", "failures": 1,
			"hint": `the backend has no health status for service "orders.v1.Orders": names match exactly, and "" is the whole server`})
	})
	t.Run("service unknown", func(t *testing.T) {
		b := startBackend(t, "", &fixedHealth{status: healthgrpc.HealthCheckResponse_SERVICE_UNKNOWN})
		g, sink, _ := testGroup(t, fastConfig(ModeCheck), nil)
		g.Add(b.addr, Status{})
		rec := waitRecords(t, sink, "endpoint evicted", 1)[0]
		checkRecord(t, rec, "WARN", append(evictedKeys, "hint"), map[string]any{"reason": "SERVICE_UNKNOWN"})
	})
	t.Run("no health service, evict", func(t *testing.T) {
		b := startBackend(t, "", noHealth)
		g, sink, _ := testGroup(t, fastConfig(ModeCheck), nil)
		g.Add(b.addr, Status{})
		rec := waitRecords(t, sink, "endpoint evicted", 1)[0]
		checkRecord(t, rec, "WARN", append(evictedKeys, "hint"), map[string]any{"reason": "UNIMPLEMENTED", "failures": 1, "hint": hintUnimplemented})
		if st, _ := g.Status(b.addr); st.PanicEligible() {
			t.Errorf("an UNIMPLEMENTED eviction must not be panic-eligible: %+v", st)
		}
	})
	t.Run("no health service, serve", func(t *testing.T) {
		b := startBackend(t, "", noHealth)
		var probes atomic.Int64
		cfg := fastConfig(ModeCheck)
		cfg.OnUnimplemented = UnimplementedServe
		g, sink, _ := testGroup(t, cfg, func(_ string, r Result) {
			if r.OK {
				probes.Add(1)
			}
		})
		g.Add(b.addr, Status{})
		waitHealth(t, g, b.addr, Healthy)
		waitFor(t, "5 probes", func() bool { return probes.Load() >= 5 })
		warns := sink.withMsg(t, msgServedAnyway)
		if len(warns) != 1 {
			t.Fatalf("%d %q records, want exactly one", len(warns), msgServedAnyway)
		}
		checkRecord(t, warns[0], "WARN", []string{"cluster", "endpoint", "check", "reason", "hint"}, map[string]any{"endpoint": b.addr, "reason": "UNIMPLEMENTED"})
		checkRecord(t, waitRecords(t, sink, "endpoint admitted", 1)[0], "INFO", admittedKeys, nil)
		if n := len(sink.withMsg(t, "endpoint evicted")); n != 0 {
			t.Errorf("%d evictions under on_unimplemented: serve", n)
		}
	})
}

func TestGroupRemoveStopsProbingAtOnce(t *testing.T) {
	stall := newStallingHealth()
	b := startBackend(t, "", nil)
	slow := startBackend(t, "", stall)
	var probes atomic.Int64
	g, sink, _ := testGroup(t, fastConfig(ModeCheck), func(addr string, _ Result) {
		if addr == b.addr {
			probes.Add(1)
		}
	})
	g.Add(b.addr, Status{})
	g.Add(slow.addr, Status{})
	waitHealth(t, g, b.addr, Healthy)
	waitFor(t, "probes", func() bool { return probes.Load() >= 3 })

	st, ok := g.Remove(b.addr)
	if !ok || st.Health != Healthy {
		t.Errorf("Remove = %+v, %v; want the healthy status", st, ok)
	}
	after := probes.Load()
	time.Sleep(10 * fastConfig(ModeCheck).Interval) // absence of probes cannot be waited for
	if n := probes.Load(); n != after {
		t.Errorf("%d probes after Remove returned", n-after)
	}
	if _, ok := g.Status(b.addr); ok {
		t.Error("Status still knows the removed endpoint")
	}
	if _, ok := g.Remove(b.addr); ok {
		t.Error("second Remove found the endpoint")
	}
	if h, n := g.Counts(); h != 0 || n != 1 {
		t.Errorf("Counts = %d/%d, want 0/1", h, n)
	}

	// A probe in flight is cut short: Remove does not wait for the timeout.
	<-stall.entered
	start := time.Now()
	g.Remove(slow.addr)
	if d := time.Since(start); d > fastConfig(ModeCheck).Timeout {
		t.Errorf("Remove waited %v for an in-flight probe", d)
	}
	for _, rec := range sink.records(t) {
		if rec["msg"] != "endpoint admitted" {
			t.Errorf("unexpected record %v", rec)
		}
	}
}

func TestGroupReconfigureKeepsStatus(t *testing.T) {
	b := startBackend(t, "", nil)
	var probes atomic.Int64
	g, sink, changes := testGroup(t, fastConfig(ModeCheck), func(string, Result) { probes.Add(1) })
	g.Add(b.addr, Status{})
	before := waitHealth(t, g, b.addr, Healthy)
	waitFor(t, "successes to settle", func() bool {
		before, _ = g.Status(b.addr)
		return before.Successes == 2
	})

	cfg := fastConfig(ModeCheck)
	cfg.Interval = 30 * time.Millisecond
	g.Reconfigure(cfg)
	if st, _ := g.Status(b.addr); st != before {
		t.Errorf("Reconfigure changed the status: %+v -> %+v", before, st)
	}
	n := probes.Load()
	waitFor(t, "probes after Reconfigure", func() bool { return probes.Load() >= n+3 })
	if st, _ := g.Status(b.addr); st != before {
		t.Errorf("status after more probes: %+v, want %+v", st, before)
	}
	if got := changes.transitions(b.addr); !slices.Equal(got, []Transition{Admitted}) {
		t.Errorf("transitions %v, want only the admission", got)
	}

	// Switching to none readmits an evicted endpoint at once...
	b.set("", healthgrpc.HealthCheckResponse_NOT_SERVING)
	waitHealth(t, g, b.addr, Unhealthy)
	g.Reconfigure(fastConfig(ModeNone))
	if st, _ := g.Status(b.addr); st.Health != Healthy {
		t.Errorf("after switching to none: %+v", st)
	}
	rec := waitRecords(t, sink, "endpoint readmitted", 1)[0]
	checkRecord(t, rec, "INFO", readmittedKeys, map[string]any{"check": "none", "healthy": 1, "total": 1})

	// ...and back to check, the backend's answer counts again.
	g.Reconfigure(fastConfig(ModeCheck))
	waitHealth(t, g, b.addr, Unhealthy)
	rec = waitRecords(t, sink, "endpoint evicted", 2)[1]
	checkRecord(t, rec, "WARN", evictedKeys, map[string]any{"check": "check", "reason": "NOT_SERVING"})
}

func TestGroupModeNone(t *testing.T) {
	var probes atomic.Int64
	g, sink, changes := testGroup(t, Config{Mode: ModeNone}, func(string, Result) { probes.Add(1) })
	g.Add("192.0.2.1:1", Status{}) // nothing there, and never asked
	if st, _ := g.Status("192.0.2.1:1"); st.Health != Healthy {
		t.Fatalf("mode none: status %+v right after Add, want healthy", st)
	}
	recs := sink.withMsg(t, "endpoint admitted")
	if len(recs) != 1 {
		t.Fatalf("%d admitted records, want 1", len(recs))
	}
	checkRecord(t, recs[0], "INFO", admittedKeys, map[string]any{"check": "none", "endpoint": "192.0.2.1:1"})
	if got := changes.transitions("192.0.2.1:1"); !slices.Equal(got, []Transition{Admitted}) {
		t.Errorf("transitions %v", got)
	}
	if probes.Load() != 0 {
		t.Errorf("mode none probed %d times", probes.Load())
	}
}

func TestGroupModeTCP(t *testing.T) {
	lis := listen(t, "")
	addr := lis.Addr().String()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	})
	t.Cleanup(func() { _ = lis.Close(); wg.Wait() })

	g, sink, _ := testGroup(t, fastConfig(ModeTCP), nil)
	g.Add(addr, Status{})
	waitHealth(t, g, addr, Healthy)
	checkRecord(t, waitRecords(t, sink, "endpoint admitted", 1)[0], "INFO", admittedKeys, map[string]any{"check": "tcp"})
	if s, _ := g.Stats(addr); !s.Result.OK || s.Mode != ModeTCP || s.At.IsZero() || s.Latency <= 0 {
		t.Errorf("Stats = %+v", s)
	}

	_ = lis.Close()
	wg.Wait()
	st := waitHealth(t, g, addr, Unhealthy)
	if st.Reason != "UNAVAILABLE" || st.Cause != CauseTransport {
		t.Errorf("status %+v", st)
	}
	checkRecord(t, waitRecords(t, sink, "endpoint evicted", 1)[0], "WARN", evictedKeys,
		map[string]any{"check": "tcp", "reason": "UNAVAILABLE", "failures": 3})
}

func TestGroupCountsAreConsistent(t *testing.T) {
	const n = 8
	var addrs []string
	var backends []*backend
	for range n {
		b := startBackend(t, "", nil)
		backends = append(backends, b)
		addrs = append(addrs, b.addr)
	}
	g, _, changes := testGroup(t, fastConfig(ModeCheck), nil)
	for _, a := range addrs {
		g.Add(a, Status{})
	}
	for _, a := range addrs {
		waitHealth(t, g, a, Healthy)
	}
	for _, b := range backends[:n/2] {
		b.set("", healthgrpc.HealthCheckResponse_NOT_SERVING)
	}
	waitFor(t, "half evicted", func() bool { h, _ := g.Counts(); return h == n/2 })

	changes.mu.Lock()
	defer changes.mu.Unlock()
	healthy, total := 0, 0
	for _, ch := range changes.changes {
		switch ch.Transition {
		case Admitted, Readmitted:
			healthy++
		case Evicted:
			healthy--
		}
		// Adds may still be going on during the first admissions: Total
		// only grows, up to n.
		if ch.Healthy != healthy || ch.Total < total || ch.Total > n || ch.Total < ch.Healthy {
			t.Fatalf("change %+v: counts %d/%d, want healthy %d and total between %d and %d (changes out of order or counts inconsistent)",
				ch, ch.Healthy, ch.Total, healthy, total, n)
		}
		total = ch.Total
		if ch.Old == ch.New {
			t.Errorf("change %+v changes nothing", ch)
		}
	}
}

// TestGroupStep drives the per-result step with no prober and no ticker.
func TestGroupStep(t *testing.T) {
	g, sink, changes := testGroup(t, fastConfig(ModeCheck), nil)
	cfg := g.cfg
	a, _, _ := g.insert("10.0.0.1:80", Status{})
	bEp, _, _ := g.insert("10.0.0.2:80", Status{Health: Healthy})
	step := func(ep *endpoint, r Result) { g.report(ep, ModeCheck, cfg, r) }

	step(a, Result{OK: true})
	step(a, Result{OK: true})
	step(a, Result{OK: true}) // counters capped: no change
	refused := Result{Reason: "UNAVAILABLE", Cause: CauseTransport}
	step(bEp, refused)
	step(bEp, refused)
	step(bEp, refused)
	step(bEp, refused)
	step(bEp, refused) // capped: no change

	if h, n := g.Counts(); h != 1 || n != 2 {
		t.Errorf("Counts = %d/%d, want 1/2", h, n)
	}
	changes.mu.Lock()
	var got []int
	for _, ch := range changes.changes {
		got = append(got, ch.New.Failures*10+ch.New.Successes)
	}
	changes.mu.Unlock()
	// a: 0/1 (admitted), 0/2; b: 1, 2, 3 (evicted)
	if want := []int{1, 2, 10, 20, 30}; !slices.Equal(got, want) {
		t.Errorf("changes (failures*10+successes) %v, want %v", got, want)
	}
	recs := sink.records(t)
	if len(recs) != 2 || recs[0]["msg"] != "endpoint admitted" || recs[1]["msg"] != "endpoint evicted" {
		t.Fatalf("records %v", recs)
	}
	checkRecord(t, recs[1], "WARN", evictedKeys, map[string]any{"endpoint": "10.0.0.2:80", "reason": "UNAVAILABLE", "failures": 3, "healthy": 1, "total": 2})
	if s, _ := g.Stats("10.0.0.2:80"); s.Result.Reason != "UNAVAILABLE" {
		t.Errorf("Stats = %+v", s)
	}

	// A result for an endpoint removed meanwhile is dropped: no record, no
	// change, no count.
	g.Remove("10.0.0.1:80")
	if g.apply(a, ModeCheck, cfg, Result{Reason: "NOT_SERVING", Cause: CauseAnswer}, time.Now()) {
		t.Error("apply committed a change to a removed endpoint")
	}
	if len(sink.records(t)) != 2 {
		t.Errorf("records after the removed endpoint's result: %v", sink.records(t))
	}
}

func TestGroupAddEdgeCases(t *testing.T) {
	g, _, _ := testGroup(t, Config{Mode: ModeNone}, nil)
	g.Add("a:1", Status{Health: Unhealthy, Reason: "NOT_SERVING", Cause: CauseAnswer, Failures: 1})
	g.Add("a:1", Status{}) // duplicate: ignored
	if st, _ := g.Status("a:1"); st.Health != Healthy {
		t.Errorf("kept unhealthy status under none: %+v, want readmitted", st)
	}
	g.Add("b:1", Status{Health: Draining})
	if st, _ := g.Status("b:1"); st.Health != Healthy {
		t.Errorf("draining re-added: %+v, want probed afresh (admitted under none)", st)
	}
	g.Close()
	g.Close()
	g.Add("c:1", Status{})
	if _, ok := g.Status("c:1"); ok {
		t.Error("Add after Close added an endpoint")
	}
	if h, n := g.Counts(); h != 2 || n != 2 {
		t.Errorf("Counts after Close = %d/%d", h, n)
	}
}

func TestGroupCloseManyEndpoints(t *testing.T) {
	lis := listen(t, "")
	dead := lis.Addr().String()
	_ = lis.Close()
	g := NewGroup(fastConfig(ModeCheck), GroupOptions{Cluster: "c", Logger: discardLogger()})
	var addrs []string
	for range 20 {
		addrs = append(addrs, startBackend(t, "", nil).addr)
	}
	for _, a := range addrs {
		g.Add(a, Status{})
	}
	g.Add(dead, Status{})
	for _, a := range addrs {
		waitHealth(t, g, a, Healthy)
	}
	g.Close() // goleak in TestMain checks that nothing is left running
	if h, n := g.Counts(); h != len(addrs) || n != len(addrs)+1 {
		t.Errorf("Counts after Close = %d/%d", h, n)
	}
}

func TestFirstProbePacing(t *testing.T) {
	g := NewGroup(Config{Interval: time.Second}, GroupOptions{Logger: discardLogger()})
	start := time.Now()
	var last time.Duration
	for i := range firstProbeBatch {
		d := g.firstProbeDelay(g.cfg)
		if i == 0 && d != 0 {
			t.Fatalf("first delay %v, want 0 (probe at once)", d)
		}
		last = d
	}
	elapsed := time.Since(start)
	if last > time.Second || last < time.Second-time.Second/firstProbeBatch-elapsed {
		t.Errorf("delay of the %dth first probe = %v, want about 1s (elapsed %v)", firstProbeBatch, last, elapsed)
	}
	g2 := NewGroup(Config{Interval: 50 * time.Millisecond}, GroupOptions{Logger: discardLogger()})
	for range firstProbeBatch - 1 {
		g2.firstProbeDelay(g2.cfg)
	}
	if d := g2.firstProbeDelay(g2.cfg); d > 50*time.Millisecond {
		t.Errorf("a batch with a 50ms interval spreads over %v, want at most the interval", d)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig: %v", err)
	}
	long := DefaultConfig()
	long.Interval, long.Timeout = time.Second, 3*time.Second
	if err := long.Validate(); err != nil {
		t.Errorf("a timeout longer than the interval: %v (probes never overlap)", err)
	}
	for _, tc := range []struct {
		cfg   Config
		field string
	}{
		{Config{Mode: "ping"}, "mode"},
		{Config{Interval: -1}, "interval"},
		{Config{Timeout: -1}, "timeout"},
		{Config{Jitter: -0.1}, "jitter"},
		{Config{Jitter: 1}, "jitter"},
		{Config{Thresholds: Thresholds{Unhealthy: -1}}, "unhealthy_threshold"},
		{Config{Thresholds: Thresholds{Healthy: -1}}, "healthy_threshold"},
		{Config{OnUnimplemented: "ignore"}, "on_unimplemented"},
		{Config{Liveness: "ping"}, "liveness"},
	} {
		err := tc.cfg.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Validate(%+v) = %v, want a FieldError for %s", tc.cfg, err, tc.field)
		}
		if u := tc.cfg.usable(); u.Validate() != nil {
			t.Errorf("usable(%+v) = %+v, still invalid: %v", tc.cfg, u, u.Validate())
		}
	}
	err := Config{Mode: "ping", Interval: -1, Jitter: 2, Thresholds: Thresholds{Unhealthy: -1}}.Validate()
	if n := len(Config{Mode: "ping", Interval: -1, Jitter: 2, Thresholds: Thresholds{Unhealthy: -1}}.Problems()); err == nil || n != 4 {
		t.Errorf("Validate found %d problems in %v, want 4", n, err)
	}
	logger, sink := newLogger()
	g := NewGroup(Config{Mode: "ping"}, GroupOptions{Cluster: "x", Logger: logger})
	if g.cfg.Mode != ModeCheck || g.cfg.Interval != DefaultInterval || g.cfg.Thresholds.Unhealthy != DefaultUnhealthyThreshold {
		t.Errorf("defaults not applied: %+v", g.cfg)
	}
	if recs := sink.records(t); len(recs) != 1 || recs[0]["level"] != "ERROR" {
		t.Errorf("invalid config records: %v", recs)
	}
}
