package integration

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// chaosHealthCheck is the health check of the backend fault tests: fast
// enough to evict within about two and a half seconds, and not so eager
// that a healthy endpoint is evicted on a loaded machine (three probes in a
// row would have to go unanswered for 400ms).
const chaosHealthCheck = "mode: check\ninterval: 400ms\ntimeout: 400ms\njitter: 0%\nunhealthy_threshold: 3\nhealthy_threshold: 1"

// chaosOutlier is the outlier detection of the fault whose health stays
// SERVING: five failed RPCs in a row eject, for 1s then 2s.
const chaosOutlier = "outlier_detection:\n  consecutive_failures: 5\n  interval: 10s\n  base_ejection_time: 1s\n  max_ejection_time: 2s"

// chaosCluster is three backends behind fault fronts, vigil in front of
// them with a grpc listener "api" and a tcp listener "tcp", and the chaos
// load on both listeners.
type chaosCluster struct {
	bs     []*chaosBackend
	fronts []*faultFront
	v      *vigilProc
	admin  string
	load   *chaosLoad
	// admitted is the log index after every endpoint was admitted.
	admitted int
}

// extra is more of the cluster's section (YAML at its indentation).
func newChaosCluster(t *testing.T, health, extra string) *chaosCluster {
	t.Helper()
	c := &chaosCluster{}
	var endpoints []string
	for _, id := range []string{"b1", "b2", "b3"} {
		b := startChaosBackend(t, id)
		f := startFaultFront(t, b.addr)
		c.bs = append(c.bs, b)
		c.fronts = append(c.fronts, f)
		endpoints = append(endpoints, f.addr)
	}
	c.v, c.admin = startChaosVigil(t, yamlConfig{
		Listeners: []yamlListener{{Name: "api", Cluster: "demo"}, {Name: "tcp", Protocol: "tcp", Cluster: "demo"}},
		Clusters:  []yamlCluster{{Name: "demo", Endpoints: endpoints, Health: health, Extra: extra}},
	})
	for _, f := range c.fronts {
		c.v.wait(20*time.Second, 0, match("endpoint admitted", "endpoint", f.addr), "admitted "+f.addr)
	}
	c.admitted = c.v.mark()
	// Clients give each call 3s, a common deadline.
	c.load = newChaosLoad(t, loadSpec{grpcAddr: c.v.listener("api"), tcpAddr: c.v.listener("tcp"), unary: 4, streams: 2, tcp: 1}, 3*time.Second)
	return c
}

// warmUp runs the load until every backend served calls, so that every
// connection vigil will keep is open, then pauses it and takes the
// baseline.
func (c *chaosCluster) warmUp(t *testing.T) chaosSample {
	t.Helper()
	c.load.start()
	for _, b := range c.bs {
		c.load.waitServed(t, 20*time.Second, b.id, 0)
	}
	c.load.pause()
	return chaosBaseline(t, c.v, c.admin)
}

// othersUntouched fails if an endpoint other than the faulty one changed
// health since log record from.
func (c *chaosCluster) othersUntouched(t *testing.T, from int, faulty string) {
	t.Helper()
	chaosOthersUntouched(t, c.v, from, faulty)
}

func chaosOthersUntouched(t *testing.T, v *vigilProc, from int, faulty string) {
	t.Helper()
	for _, r := range v.logs.find(from, func(r record) bool {
		return strings.HasPrefix(r.msg(), "endpoint ") && r.str("endpoint") != faulty && r.msg() != "endpoint added"
	}) {
		t.Errorf("an endpoint other than the faulty one changed: %v", r)
	}
}

// TestChaosBackendFaults turns one of three backends bad in each of the
// ways a backend goes bad, under a steady mixed load, and checks that
// exactly that endpoint is evicted for the right reason, that no call
// fails that did not reach it (vigil retries an RPC on another endpoint
// as long as nothing of it was sent), that it is readmitted once healed,
// and that vigil's goroutines and heap come back to where they were.
func TestChaosBackendFaults(t *testing.T) {
	t.Parallel()
	type fault struct {
		name   string
		health string
		// extra is more of the cluster's section; outlier says the
		// eviction is outlier detection's (check=outlier, failures at
		// least the count), not the active check's.
		extra   string
		outlier bool
		reasons []string // acceptable eviction reasons
		// failures is the failure count the eviction record carries:
		// the unhealthy threshold for transport trouble, 1 for an answer.
		failures int
		inject   func(c *chaosCluster)
		heal     func(c *chaosCluster)
		// flapping: the endpoint is evicted and readmitted over and over;
		// the eviction log must summarise it.
		flapping bool
	}
	front := func(m faultMode) (func(*chaosCluster), func(*chaosCluster)) {
		return func(c *chaosCluster) { c.fronts[2].setMode(m) }, func(c *chaosCluster) { c.fronts[2].setMode(modePass) }
	}
	var faults []fault
	for _, m := range []struct {
		mode    faultMode
		reasons []string
	}{
		// Probes on the frozen connection time out; the next one dials a
		// connection that is accepted and never answered.
		{modeBlackhole, []string{"DEADLINE_EXCEEDED"}},
		// The probe connection is closed under the first probe; the next
		// ones time out on the hung backend.
		{modeRestartBlackhole, []string{"DEADLINE_EXCEEDED"}},
		// Not HTTP/2: the handshake fails.
		{modeHTTP1, []string{"UNAVAILABLE"}},
		{modeGarbage, []string{"UNAVAILABLE"}},
		// The health RPC itself is reset: grpc-go maps INTERNAL_ERROR
		// to INTERNAL, and nobody answered, so it counts as transport.
		{modeReset, []string{"INTERNAL"}},
	} {
		inject, heal := front(m.mode)
		faults = append(faults, fault{name: m.mode.String(), health: chaosHealthCheck, reasons: m.reasons, failures: 3,
			inject: inject, heal: heal})
	}
	faults = append(faults,
		fault{
			// Health answers and responses take 10s, twice the clients'
			// deadline.
			name: "slow", health: chaosHealthCheck, reasons: []string{"DEADLINE_EXCEEDED"}, failures: 3,
			inject: func(c *chaosCluster) { c.bs[2].delay.Store(int64(10 * time.Second)) },
			heal:   func(c *chaosCluster) { c.bs[2].delay.Store(0) },
		},
		fault{
			// A health status that changes between every two polls.
			name: "flap-check", health: chaosHealthCheck, reasons: []string{"NOT_SERVING"}, failures: 1, flapping: true,
			inject: func(c *chaosCluster) { c.bs[2].flapPolled(true) },
			heal:   func(c *chaosCluster) { c.bs[2].flapPolled(false) },
		},
		fault{
			// 50 health changes a second, pushed on a Watch stream.
			name: "flap-watch", health: strings.Replace(chaosHealthCheck, "mode: check", "mode: watch", 1),
			reasons: []string{"NOT_SERVING"}, failures: 1, flapping: true,
			inject: func(c *chaosCluster) { c.bs[2].flap(10 * time.Millisecond) },
			heal:   func(c *chaosCluster) { c.bs[2].flap(0) },
		},
		fault{
			// Health SERVING, every TestService RPC failing UNAVAILABLE:
			// only the traffic says so.
			name: "serving-failing", health: chaosHealthCheck, extra: chaosOutlier, outlier: true,
			reasons: []string{"UNAVAILABLE"}, failures: 5,
			inject: func(c *chaosCluster) { c.bs[2].failWith(codes.Unavailable) },
			heal:   func(c *chaosCluster) { c.bs[2].failWith(codes.OK) },
		},
	)
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			c := newChaosCluster(t, f.health, f.extra)
			faulty := c.fronts[2].addr
			baseline := c.warmUp(t)

			c.load.start()
			from := c.v.mark()
			others := c.load.served()
			f.inject(c)
			r, _ := c.v.wait(20*time.Second, from, match("endpoint evicted", "endpoint", faulty), "the faulty endpoint evicted")
			evictedSeen := time.Now()
			if f.outlier {
				if r.str("check") != "outlier" || !slices.Contains(f.reasons, r.str("reason")) || r.num("failures") < f.failures || r.str("cluster") != "demo" {
					t.Errorf("evicted record = %v; want check=outlier, reason in %v after at least %d failures", r, f.reasons, f.failures)
				}
			} else if !slices.Contains(f.reasons, r.str("reason")) || r.num("failures") != f.failures || r.str("cluster") != "demo" {
				t.Errorf("evicted record = %v; want reason in %v after %d failures", r, f.reasons, f.failures)
			}
			t.Logf("evicted: reason %s after %d failures, healthy %s/%s", r.str("reason"), r.num("failures"), r.str("healthy"), r.str("total"))
			if f.flapping {
				r, _ := c.v.wait(20*time.Second, from, match("endpoint flapping", "endpoint", faulty), "the flapping summary")
				t.Logf("flapping summary: %v", r)
			} else {
				// While it is out, only the healthy two serve.
				time.Sleep(500 * time.Millisecond)
			}
			c.othersUntouched(t, c.admitted, faulty)
			now := c.load.served()
			for _, b := range c.bs[:2] {
				if now[b.id] <= others[b.id] {
					t.Errorf("%s served no call during the fault: %v then %v", b.id, others, now)
				}
			}
			// An evicted endpoint costs no more than a healthy one.
			c.load.pause()
			chaosRequireBaseline(t, c.v, c.admin, baseline, "while "+f.name+" is evicted")
			c.load.start()

			f.heal(c)
			// A flapping endpoint ends healthy: the admin API says when.
			eventually(t, 20*time.Second, func() bool {
				_, e := endpointOf(t, clusters(t, c.admin), "demo", faulty)
				return e["health"] == "healthy"
			}, "the healed endpoint is healthy again")
			c.load.waitServed(t, 20*time.Second, "b3", c.load.served()["b3"])
			c.load.pause()

			reached := c.fronts[2].reachedIDs()
			verdict := c.load.verdict(chaosReachedFront(reached, faulty, evictedSeen))
			verdict.requireNoUnexplained(t, f.name)
			evictions := len(c.v.logs.find(from, match("endpoint evicted", "endpoint", faulty)))
			readmissions := len(c.v.logs.find(from, match("endpoint readmitted", "endpoint", faulty)))
			t.Logf("%s: %d eviction and %d readmission records for the faulty endpoint; %d RPCs reached it",
				f.name, evictions, readmissions, len(reached))
			if f.outlier {
				chaosNoFailureWhileEjected(t, c, from, faulty)
			}
			c.othersUntouched(t, c.admitted, faulty)
			chaosRequireBaseline(t, c.v, c.admin, baseline, "after "+f.name)
		})
	}
}

// chaosNoFailureWhileEjected checks an endpoint ejected by outlier
// detection from log record from on, its health SERVING throughout: every
// eviction and readmission of it is outlier detection's, the last one a
// readmission (it came back once healed), and no call of the load that
// started while it was out failed, reached it or not. An RPC picked just
// before a record may start just before it: grace on either side.
func chaosNoFailureWhileEjected(t *testing.T, c *chaosCluster, from int, faulty string) {
	t.Helper()
	const grace = 200 * time.Millisecond
	var rs []record
	// The log is read as vigil writes it: the last readmission's record
	// may come after /clusters says healthy.
	eventually(t, 10*time.Second, func() bool {
		rs = c.v.logs.find(from, func(r record) bool {
			return (r.msg() == "endpoint evicted" || r.msg() == "endpoint readmitted") && r.str("endpoint") == faulty
		})
		return len(rs) > 0 && rs[len(rs)-1].msg() == "endpoint readmitted"
	}, "the faulty endpoint's ejections, the last one ended by a readmission")
	for _, r := range rs {
		if r.str("check") != "outlier" {
			t.Errorf("%s by the active check while the backend was SERVING: %v", r.msg(), r)
		}
	}
	windows := 0
	for i := 0; i+1 < len(rs); i++ {
		if rs[i].msg() != "endpoint evicted" || rs[i+1].msg() != "endpoint readmitted" {
			continue
		}
		out, in := recordTime(t, rs[i]), recordTime(t, rs[i+1])
		failed := c.load.failuresIn(out.Add(grace), in.Add(-grace))
		t.Logf("ejection %d (%s): out %v; calls started while out (less %v either side) that failed: %d",
			rs[i].num("ejections"), rs[i].str("ejection"), in.Sub(out).Round(time.Millisecond), grace, len(failed))
		for j, f := range failed {
			if j == 10 {
				t.Errorf("  ... and %d more", len(failed)-j)
				break
			}
			t.Errorf("call failed while %s was ejected: %v (started %v after the ejection)", faulty, f, f.Start.Sub(out).Round(time.Millisecond))
		}
		windows++
	}
	if windows == 0 {
		t.Errorf("no ejection followed by its readmission in %v", rs)
	}
}

// chaosReachedFront judges a failed call of a load through vigil in front
// of a faulty endpoint at address faulty, evicted before evictedSeen:
//
//   - a gRPC call reached it if the fault front saw its headers, or if
//     vigil's error names the endpoint (it was sent on a connection to it
//     that was lost, possibly before the front read it);
//   - a call through the tcp listener reached it if it started before the
//     eviction: vigil balances connections, not calls, and cannot know
//     that a backend which accepts a connection then speaks garbage on it
//     is bad until the probes say so. After the eviction record, no new
//     connection may go there.
func chaosReachedFront(reached map[string]bool, faulty string, evictedSeen time.Time) func(chaosFailure) bool {
	return func(f chaosFailure) bool {
		if reached[f.ID] || strings.Contains(f.Err.Error(), faulty) {
			return true
		}
		return f.Kind == "tcp" && f.Start.Before(evictedSeen)
	}
}

// TestChaosBackendKilledAndRestarted kills one of three backend processes
// with SIGKILL under load, then starts it again on the same address: the
// endpoint is evicted as UNAVAILABLE (refused), the calls that fail are
// only those that were on it when it died, and it is readmitted and
// served again once back.
func TestChaosBackendKilledAndRestarted(t *testing.T) {
	t.Parallel()
	ds := []*demoBackend{startDemoBackend(t, "d1"), startDemoBackend(t, "d2"), startDemoBackend(t, "d3")}
	v, admin := startChaosVigil(t, yamlConfig{
		Listeners: []yamlListener{{Name: "api", Cluster: "demo"}, {Name: "tcp", Protocol: "tcp", Cluster: "demo"}},
		Clusters:  []yamlCluster{{Name: "demo", Endpoints: []string{ds[0].addr, ds[1].addr, ds[2].addr}, Health: chaosHealthCheck}},
	})
	for _, d := range ds {
		v.wait(20*time.Second, 0, match("endpoint admitted", "endpoint", d.addr), "admitted "+d.addr)
	}
	admitted := v.mark()
	load := newChaosLoad(t, loadSpec{grpcAddr: v.listener("api"), tcpAddr: v.listener("tcp"), unary: 4, streams: 2, tcp: 1}, 3*time.Second)
	load.start()
	for _, id := range []string{"d1", "d2", "d3"} {
		load.waitServed(t, 20*time.Second, id, 0)
	}
	load.pause()
	baseline := chaosBaseline(t, v, admin)

	load.start()
	time.Sleep(300 * time.Millisecond) // calls in flight on d3 when it dies
	from := v.mark()
	before := load.served()
	killed := ds[2].addr
	ds[2].kill()
	killDone := time.Now()
	r, at := v.wait(20*time.Second, from, match("endpoint evicted", "endpoint", killed), "the killed endpoint evicted")
	if r.str("reason") != "UNAVAILABLE" || r.num("failures") != 3 {
		t.Errorf("evicted record = %v; want UNAVAILABLE after 3 failures", r)
	}
	t.Logf("evicted: reason %s after %d failures, %v after the kill", r.str("reason"), r.num("failures"), time.Since(killDone).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	now := load.served()
	for _, id := range []string{"d1", "d2"} {
		if now[id] <= before[id] {
			t.Errorf("%s served no call after d3 was killed: %v then %v", id, before, now)
		}
	}

	// The same backend again, on the same address.
	restarted := startDemoBackend(t, "d3", "-addr", killed, "-print-addr")
	if restarted.addr != killed {
		t.Fatalf("restarted on %s; want %s", restarted.addr, killed)
	}
	v.wait(20*time.Second, at, match("endpoint readmitted", "endpoint", killed), "the restarted endpoint readmitted")
	load.waitServed(t, 20*time.Second, "d3", load.served()["d3"])
	load.pause()

	// A gRPC call reached d3 if vigil's error names it (it was on the
	// connection that died); a call through the tcp listener if it was
	// connected before the process was gone.
	verdict := load.verdict(func(f chaosFailure) bool {
		return strings.Contains(f.Err.Error(), killed) || f.Kind == "tcp" && f.Start.Before(killDone)
	})
	verdict.requireNoUnexplained(t, "SIGKILL")
	chaosOthersUntouched(t, v, admitted, killed)
	chaosRequireBaseline(t, v, admin, baseline, "after SIGKILL and restart")
}
