package integration

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// pacedLoad is a steady load of UnaryCalls through a vigil listener, at
// about a given rate, until it is stopped (at the test's end at the
// latest).
type pacedLoad struct {
	sent, failed atomic.Int64
	stop         func()
}

func startPacedLoad(t *testing.T, addr string, perSecond, workers int) *pacedLoad {
	t.Helper()
	c := dialClient(t, addr)
	l := &pacedLoad{}
	ctx, cancel := context.WithCancel(context.Background())
	tick := time.NewTicker(time.Second / time.Duration(perSecond))
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := c.call(rctx)
				rcancel()
				l.sent.Add(1)
				if err != nil {
					l.failed.Add(1)
				}
			}
		}()
	}
	var once sync.Once
	l.stop = func() {
		once.Do(func() {
			cancel()
			tick.Stop()
			wg.Wait()
		})
	}
	t.Cleanup(l.stop)
	return l
}

// outlierCluster is a cluster of backends with outlier detection as
// extra, behind one grpc listener, every endpoint admitted.
func outlierCluster(t *testing.T, n int, extra string) ([]*backend, *vigilProc) {
	t.Helper()
	var bs []*backend
	for i := range n {
		b := startBackend(t, fmt.Sprintf("b%d", i+1))
		b.track.Store(true)
		bs = append(bs, b)
	}
	v := startVigil(t, yamlConfig{
		Admin:     true,
		Listeners: []yamlListener{{Name: "api", Cluster: "demo"}},
		Clusters:  []yamlCluster{{Name: "demo", Endpoints: addrs(bs), Extra: extra, Health: patientCheck}},
	}.String())
	for _, b := range bs {
		v.wait(15*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted "+b.id)
	}
	return bs, v
}

// patientCheck is the active check of the outlier tests, which must
// never evict (onlyOutlierEvictions): a timeout well beyond a loaded
// machine's stalls rather than the default 100ms, which two stalls of a
// busy CI machine exceed (two outlier tests once failed at the same
// instant so).
const patientCheck = "mode: check\ninterval: 200ms\ntimeout: 3s\nunhealthy_threshold: 3\nhealthy_threshold: 1"

// onlyOutlierEvictions fails if any endpoint was evicted by its active
// check: the backends' health stays SERVING in these tests, so every
// eviction must be outlier detection's.
func onlyOutlierEvictions(t *testing.T, v *vigilProc) {
	t.Helper()
	for _, r := range v.logs.find(0, match("endpoint evicted")) {
		if r.str("check") != "outlier" {
			t.Errorf("eviction by the active check while every backend was SERVING: %v", r)
		}
	}
	for _, r := range v.logs.find(0, match("endpoint readmitted")) {
		if r.str("check") != "outlier" {
			t.Errorf("readmission by the active check (so an eviction by it before): %v", r)
		}
	}
}

// TestOutlierEjectsFailingBackend: one of three backends, its health
// SERVING throughout, fails every RPC with UNAVAILABLE under a load of
// about 1,000 RPC/s. It is ejected after consecutive_failures, gets no
// RPC while it is out, is readmitted after base_ejection_time, is ejected
// again for twice as long when it still fails, and once it is well again
// its readmission brings it traffic again.
func TestOutlierEjectsFailingBackend(t *testing.T) {
	t.Parallel()
	const (
		consecutive = 5
		base        = 500 * time.Millisecond
		// grace is how long after the ejection's record RPCs picked
		// before it may still reach the backend.
		grace = 100 * time.Millisecond
	)
	bs, v := outlierCluster(t, 3, fmt.Sprintf(`outlier_detection:
  consecutive_failures: %d
  interval: 10s
  base_ejection_time: %v
  max_ejection_time: 5s`, consecutive, base))
	load := startPacedLoad(t, v.listener("api"), 1000, 16)
	eventually(t, 20*time.Second, func() bool {
		return bs[0].calls.Load() >= 100 && bs[1].calls.Load() >= 100 && bs[2].calls.Load() >= 100
	}, "every backend to serve 100 RPCs of the load")

	bad, good := bs[0], bs[1:]
	from := v.mark()
	sent0, failed0 := load.sent.Load(), load.failed.Load()
	failStart := time.Now()
	bad.fail(codes.Unavailable, 100)

	ev, at := v.wait(10*time.Second, from, match("endpoint evicted", "endpoint", bad.addr), "ejection of "+bad.id)
	if ev.str("check") != "outlier" || ev.str("reason") != "UNAVAILABLE" || ev.num("failures") < consecutive ||
		ev.str("ejection") != base.String() || ev.str("rule") != "consecutive_failures" || ev.num("ejections") != 1 {
		t.Errorf("ejection record = %v; want check=outlier reason=UNAVAILABLE failures>=%d ejection=%v rule=consecutive_failures ejections=1",
			ev, consecutive, base)
	}
	rd, at := v.wait(10*time.Second, at, match("endpoint readmitted", "endpoint", bad.addr), "readmission of "+bad.id)
	if rd.str("check") != "outlier" {
		t.Errorf("readmission record = %v; want check=outlier", rd)
	}
	ejectedAt, readmittedAt := recordTime(t, ev), recordTime(t, rd)
	if out := readmittedAt.Sub(ejectedAt); out < base-20*time.Millisecond || out > base+time.Second {
		t.Errorf("first ejection lasted %v; want about %v", out, base)
	}

	// From the first failure to the last RPC the backend got before its
	// readmission: what reached it until its ejection took effect.
	rpcs, last := bad.callsIn(failStart, readmittedAt)
	toZero := last.Sub(failStart)
	t.Logf("failing backend at ~1,000 RPC/s over 3 backends: zero traffic %v after it began to fail, after %d RPCs (%d consecutive_failures; record failures=%d); ejection record %v after the first failure",
		toZero.Round(100*time.Microsecond), rpcs, consecutive, ev.num("failures"), ejectedAt.Sub(failStart).Round(100*time.Microsecond))
	if last.After(ejectedAt.Add(grace)) {
		t.Errorf("%s got an RPC %v after its ejection's record (want none after %v)", bad.id, last.Sub(ejectedAt), grace)
	}
	if rpcs < consecutive {
		t.Errorf("%s got %d RPCs before its ejection; want at least %d", bad.id, rpcs, consecutive)
	}
	others := 0
	for _, b := range good {
		n, _ := b.callsIn(ejectedAt.Add(grace), readmittedAt)
		others += n
	}
	if others < 100 {
		t.Errorf("the other backends got %d RPCs while %s was out; the load is too thin to show it got none", others, bad.id)
	}
	t.Logf("while %s was out (%v-%v after the ejection): it got 0 RPCs, the other two %d", bad.id, grace, readmittedAt.Sub(ejectedAt).Round(time.Millisecond), others)

	// Still failing after its readmission: ejected again, for twice as long.
	ev2, at := v.wait(10*time.Second, at, match("endpoint evicted", "endpoint", bad.addr), "second ejection of "+bad.id)
	if ev2.str("check") != "outlier" || ev2.str("reason") != "UNAVAILABLE" || ev2.str("ejection") != (2*base).String() || ev2.num("ejections") != 2 {
		t.Errorf("second ejection record = %v; want check=outlier reason=UNAVAILABLE ejection=%v ejections=2", ev2, 2*base)
	}
	// Well again: the end of this ejection brings it traffic.
	bad.fail(codes.OK, 0)
	rd2, _ := v.wait(10*time.Second, at, match("endpoint readmitted", "endpoint", bad.addr), "second readmission of "+bad.id)
	if rd2.str("check") != "outlier" {
		t.Errorf("second readmission record = %v; want check=outlier", rd2)
	}
	ejected2At, readmitted2At := recordTime(t, ev2), recordTime(t, rd2)
	if out := readmitted2At.Sub(ejected2At); out < 2*base-20*time.Millisecond || out > 2*base+time.Second {
		t.Errorf("second ejection lasted %v; want about %v", out, 2*base)
	}
	// The readmission takes effect before its record is written, so an RPC
	// may come just before the record's time; grace at both ends.
	if n, last := bad.callsIn(ejected2At.Add(grace), readmitted2At.Add(-grace)); n != 0 {
		t.Errorf("%s got %d RPCs during its second ejection (the last %v before its readmission's record)", bad.id, n, readmitted2At.Sub(last))
	}
	hits := bad.hits.Load()
	eventually(t, 10*time.Second, func() bool { return bad.hits.Load() >= hits+50 }, "%s to serve RPCs again after its readmission", bad.id)
	sent := load.sent.Load() - sent0
	t.Logf("ejections: %v then %v; client RPCs failed meanwhile: %d of %d (%.0f RPC/s)", readmittedAt.Sub(ejectedAt).Round(time.Millisecond),
		readmitted2At.Sub(ejected2At).Round(time.Millisecond), load.failed.Load()-failed0, sent, float64(sent)/time.Since(failStart).Seconds())
	load.stop()

	for _, b := range good {
		if rs := v.logs.find(0, match("endpoint evicted", "endpoint", b.addr)); len(rs) > 0 {
			t.Errorf("%s, which never failed, was evicted: %v", b.id, rs[0])
		}
	}
	onlyOutlierEvictions(t, v)
}

// TestOutlierEjectsResettingBackend: a backend whose health stays SERVING
// but which resets every RPC's stream (RST_STREAM INTERNAL_ERROR, as a
// crashing handler or a proxy in front of it would) is ejected like one
// that answers UNAVAILABLE: the reset is a failure (reason INTERNAL), it
// gets no RPC while it is out, and it serves again after its readmission.
func TestOutlierEjectsResettingBackend(t *testing.T) {
	t.Parallel()
	const (
		consecutive = 5
		base        = time.Second
		grace       = 100 * time.Millisecond
	)
	bad := startBackend(t, "b1", overNetHTTP())
	bs := []*backend{bad, startBackend(t, "b2"), startBackend(t, "b3")}
	for _, b := range bs {
		b.track.Store(true)
	}
	v := startVigil(t, yamlConfig{
		Admin:     true,
		Listeners: []yamlListener{{Name: "api", Cluster: "demo"}},
		Clusters: []yamlCluster{{Name: "demo", Endpoints: addrs(bs), Extra: fmt.Sprintf(`outlier_detection:
  consecutive_failures: %d
  interval: 10s
  base_ejection_time: %v`, consecutive, base), Health: patientCheck}},
	}.String())
	for _, b := range bs {
		v.wait(15*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted "+b.id)
	}
	load := startPacedLoad(t, v.listener("api"), 500, 8)
	eventually(t, 20*time.Second, func() bool {
		return bs[0].hits.Load() >= 50 && bs[1].hits.Load() >= 50 && bs[2].hits.Load() >= 50
	}, "every backend, b1 through net/http too, to serve 50 RPCs of the load")

	from := v.mark()
	resetStart := time.Now()
	bad.reset.Store(true)
	ev, at := v.wait(10*time.Second, from, match("endpoint evicted", "endpoint", bad.addr), "ejection of "+bad.id)
	if ev.str("check") != "outlier" || ev.str("reason") != "INTERNAL" || ev.num("failures") < consecutive || ev.str("rule") != "consecutive_failures" {
		t.Errorf("ejection record = %v; want check=outlier reason=INTERNAL failures>=%d rule=consecutive_failures", ev, consecutive)
	}
	bad.reset.Store(false)
	rd, _ := v.wait(10*time.Second, at, match("endpoint readmitted", "endpoint", bad.addr), "readmission of "+bad.id)
	if rd.str("check") != "outlier" {
		t.Errorf("readmission record = %v; want check=outlier", rd)
	}
	ejectedAt, readmittedAt := recordTime(t, ev), recordTime(t, rd)
	rpcs, last := bad.callsIn(resetStart, readmittedAt)
	if last.After(ejectedAt.Add(grace)) {
		t.Errorf("%s got an RPC %v after its ejection's record (want none after %v)", bad.id, last.Sub(ejectedAt), grace)
	}
	hits := bad.hits.Load()
	eventually(t, 10*time.Second, func() bool { return bad.hits.Load() >= hits+25 }, "%s to serve RPCs again after its readmission", bad.id)
	load.stop()
	t.Logf("resetting backend: ejected %v after its first reset, after %d RPCs; out %v; client RPCs failed: %d of %d",
		ejectedAt.Sub(resetStart).Round(100*time.Microsecond), rpcs, readmittedAt.Sub(ejectedAt).Round(time.Millisecond), load.failed.Load(), load.sent.Load())
	onlyOutlierEvictions(t, v)
}

// TestOutlierIgnoresClientCancellationsAndDeadlines: RPCs that a client
// cancels, or whose client deadline passes, while a backend holds them
// say nothing about it: many in a row do not eject it, by either rule.
// Then three real failures in a row do, and the record shows only them.
func TestOutlierIgnoresClientCancellationsAndDeadlines(t *testing.T) {
	t.Parallel()
	const (
		consecutive = 3
		interval    = 200 * time.Millisecond
		perKind     = 20 // RPCs cancelled, and RPCs timed out, on the held backend
	)
	bs, v := outlierCluster(t, 2, fmt.Sprintf(`outlier_detection:
  consecutive_failures: %d
  interval: %v
  base_ejection_time: 500ms
  max_ejection_percent: 100
  failure_percentage: 50
  minimum_requests: 5`, consecutive, interval))
	held := bs[0]
	held.hang.Store(true)
	c := dialClient(t, v.listener("api"))
	from := v.mark()

	// Client deadlines: RPCs one at a time until perKind of them timed out
	// on the held backend (the others, on b2, are answered).
	timedOut := 0
	for i := 0; timedOut < perKind; i++ {
		if i > 4*perKind {
			t.Fatalf("only %d of %d RPCs timed out on %s; ejections: %v", timedOut, i, held.id, v.logs.find(from, match("endpoint evicted")))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_, err := c.call(ctx)
		cancel()
		switch status.Code(err) {
		case codes.OK:
		case codes.DeadlineExceeded:
			timedOut++
		default:
			t.Fatalf("RPC %d: %v; want an answer or DEADLINE_EXCEEDED", i, err)
		}
	}

	// Client cancellations: each RPC cancelled once the held backend holds
	// it (those that go to b2 are answered first).
	cancelled := 0
	for i := 0; cancelled < perKind; i++ {
		if i > 4*perKind {
			t.Fatalf("only %d of %d RPCs cancelled on %s; ejections: %v", cancelled, i, held.id, v.logs.find(from, match("endpoint evicted")))
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		holding := held.holds.Load()
		go func() {
			_, err := c.call(ctx)
			done <- err
		}()
		var err error
		deadline := time.After(10 * time.Second)
	wait:
		for {
			select {
			case err = <-done:
				break wait
			case <-deadline:
				cancel()
				t.Fatalf("RPC %d neither answered nor held by %s within 10s", i, held.id)
			case <-time.After(time.Millisecond):
				if held.holds.Load() > holding {
					cancel()
					err = <-done
					if status.Code(err) != codes.Canceled {
						t.Fatalf("cancelled RPC %d: %v; want CANCELLED", i, err)
					}
					cancelled++
					break wait
				}
			}
		}
		cancel()
		if err != nil && status.Code(err) != codes.Canceled {
			t.Fatalf("RPC %d: %v", i, err)
		}
	}
	// Every RPC the held backend got ended with its client.
	eventually(t, 10*time.Second, func() bool { return held.inflight.Load() == 0 }, "%s to see every RPC end", held.id)
	// Give failure_percentage a few intervals to judge what it saw (were
	// those RPCs failures, it would eject: all of the held backend's
	// RPCs, over minimum_requests, in one interval or two).
	settled := time.Now().Add(3 * interval)
	eventually(t, 10*time.Second, func() bool { return time.Now().After(settled) }, "three intervals to pass")
	if rs := v.logs.find(from, match("endpoint evicted")); len(rs) > 0 {
		t.Fatalf("ejected after %d client deadlines and %d cancellations: %v", timedOut, cancelled, rs[0])
	}

	// The control: real failures, consecutive_failures of them, eject it,
	// and the record counts only those.
	held.hang.Store(false)
	held.fail(codes.Unavailable, 100)
	mark := v.mark()
	calls := held.calls.Load()
	for i := 0; held.calls.Load() < calls+consecutive; i++ {
		if i > 10*consecutive {
			t.Fatalf("%s got %d of %d RPCs", held.id, held.calls.Load()-calls, i)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = c.call(ctx)
		cancel()
	}
	ev, _ := v.wait(10*time.Second, mark, match("endpoint evicted", "endpoint", held.addr), "ejection after real failures")
	if ev.str("check") != "outlier" || ev.str("reason") != "UNAVAILABLE" || ev.num("failures") != consecutive || ev.str("rule") != "consecutive_failures" {
		t.Errorf("ejection record = %v; want check=outlier reason=UNAVAILABLE failures=%d rule=consecutive_failures", ev, consecutive)
	}
	t.Logf("%d client deadlines and %d client cancellations on %s ejected nothing; then %d UNAVAILABLE in a row did: %v",
		timedOut, cancelled, held.id, consecutive, ev)
	onlyOutlierEvictions(t, v)
}

// TestOutlierMaxEjectionPercent: three of four backends fail every RPC,
// with max_ejection_percent 50: never more than two are out at once (the
// third keeps its traffic meanwhile), and as ejections end and the
// failing backends trip again, two at a time are.
func TestOutlierMaxEjectionPercent(t *testing.T) {
	t.Parallel()
	bs, v := outlierCluster(t, 4, `outlier_detection:
  consecutive_failures: 3
  interval: 10s
  base_ejection_time: 300ms
  max_ejection_time: 300ms
  max_ejection_percent: 50`)
	load := startPacedLoad(t, v.listener("api"), 1000, 16)
	eventually(t, 20*time.Second, func() bool {
		for _, b := range bs {
			if b.calls.Load() < 50 {
				return false
			}
		}
		return true
	}, "every backend to serve 50 RPCs of the load")
	from := v.mark()
	for _, b := range bs[:3] {
		b.fail(codes.Unavailable, 100)
	}
	outlierRecord := func(r record) bool {
		return (r.msg() == "endpoint evicted" || r.msg() == "endpoint readmitted") && r.str("check") == "outlier"
	}
	// Six ejections: every failing backend ejected more than once, two
	// at a time at most.
	ejections := func() int {
		n := 0
		for _, r := range v.logs.find(from, outlierRecord) {
			if r.msg() == "endpoint evicted" {
				n++
			}
		}
		return n
	}
	eventually(t, 20*time.Second, func() bool { return ejections() >= 6 }, "six ejections")
	load.stop()

	out, most := map[string]bool{}, 0
	ejectedOf := map[string]int{}
	for _, r := range v.logs.find(from, outlierRecord) {
		ep := r.str("endpoint")
		if r.msg() == "endpoint evicted" {
			if out[ep] {
				t.Errorf("%s ejected twice without a readmission: %v", ep, r)
			}
			out[ep] = true
			ejectedOf[ep]++
		} else {
			delete(out, ep)
		}
		most = max(most, len(out))
	}
	if most != 2 {
		t.Errorf("at most %d endpoints out at once; want 2 (50%% of 4)", most)
	}
	for _, b := range bs[:3] {
		if ejectedOf[b.addr] == 0 {
			t.Errorf("failing %s never ejected", b.id)
		}
	}
	if ejectedOf[bs[3].addr] != 0 {
		t.Errorf("%s, which never failed, was ejected", bs[3].id)
	}
	t.Logf("ejections per failing backend: %s %d, %s %d, %s %d; at most %d out at once", bs[0].id, ejectedOf[bs[0].addr],
		bs[1].id, ejectedOf[bs[1].addr], bs[2].id, ejectedOf[bs[2].addr], most)
	onlyOutlierEvictions(t, v)
}

// TestOutlierFailurePercentage: a backend failing 90% of its RPCs (never
// more than nine in a row) is ejected by failure_percentage at the end of
// an interval, with consecutive_failures off.
func TestOutlierFailurePercentage(t *testing.T) {
	t.Parallel()
	const interval = 300 * time.Millisecond
	bs, v := outlierCluster(t, 3, fmt.Sprintf(`outlier_detection:
  consecutive_failures: 0
  interval: %v
  base_ejection_time: 500ms
  failure_percentage: 50
  minimum_requests: 20`, interval))
	startPacedLoad(t, v.listener("api"), 500, 8)
	eventually(t, 20*time.Second, func() bool {
		return bs[0].calls.Load() >= 50 && bs[1].calls.Load() >= 50 && bs[2].calls.Load() >= 50
	}, "every backend to serve 50 RPCs of the load")
	bad := bs[2]
	from := v.mark()
	failStart := time.Now()
	bad.fail(codes.Unavailable, 90)
	ev, at := v.wait(10*time.Second, from, match("endpoint evicted", "endpoint", bad.addr), "ejection of "+bad.id)
	if ev.str("check") != "outlier" || ev.str("reason") != "UNAVAILABLE" || ev.str("rule") != "failure_percentage" || ev.num("failures") < 18 {
		t.Errorf("ejection record = %v; want check=outlier reason=UNAVAILABLE rule=failure_percentage failures>=18 (90%% of minimum_requests)", ev)
	}
	v.wait(10*time.Second, at, match("endpoint readmitted", "endpoint", bad.addr, "check", "outlier"), "readmission of "+bad.id)
	t.Logf("90%% failing: ejected by failure_percentage %v after it began to fail (interval %v): %v",
		recordTime(t, ev).Sub(failStart).Round(time.Millisecond), interval, ev)
	for _, b := range bs[:2] {
		if rs := v.logs.find(0, match("endpoint evicted", "endpoint", b.addr)); len(rs) > 0 {
			t.Errorf("%s, which never failed, was evicted: %v", b.id, rs[0])
		}
	}
	onlyOutlierEvictions(t, v)
}
