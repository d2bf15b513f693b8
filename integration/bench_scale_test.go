package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// BenchmarkCheckCost (issue 2) is the cost of checking: 1,000 endpoints
// (10 clusters of 100, served by one fleet helper process on loopback) in
// check mode at a 1 s interval, i.e. 1,000 Checks/s. After all are
// admitted and 3 s of settling, vigil's CPU share is measured over
// VIGIL_BENCH_STEADY (default 20s), then its memory.
//
// Metrics: cpu-% (of one core), rss-MiB and hwm-MiB (peak),
// rss-KiB/endpoint (above a vigil with one endpoint), admit-s (from vigil's
// start until every endpoint is healthy at once), healthy-at-10s (how many
// were healthy 10 s after the start), evicted-startup and
// evicted-steady (false evictions before and during the measured window:
// every backend stays healthy), fleet-cpu-% (the health servers').
//
//	VIGIL_INTEGRATION_NORACE=1 go test -run '^$' -bench CheckCost -benchtime 1x ./integration/
func BenchmarkCheckCost(b *testing.B) {
	benchSetup(b, "vigil, the fleet helper process (1,000 health servers), this process (reads vigil's log; idle otherwise)")
	f := startFleet(b, 1000, 0)
	baseline := baselineRSS(b, f.addrs[0])
	measureHealthScale(b, f, 100, "mode: check\ninterval: 1s\ntimeout: 1s", "", baseline, benchDuration(b, "VIGIL_BENCH_STEADY", 20*time.Second))
}

// BenchmarkScale (issue 4) is 10,000 endpoints (100 clusters of 100,
// served by three fleet helper processes on 127.0.10-12.x) in
//
//   - watch: watch mode (interval 5s, or VIGIL_BENCH_SCALE_WATCH_INTERVAL;
//     a liveness Check per endpoint every interval while a stream is
//     silent): the time for all to be
//     admitted (target: within 10 s of start), then the steady-state CPU
//     while nothing changes over VIGIL_BENCH_STEADY (default 20s; target
//     < 2% of one core) and RSS per checked endpoint (target ≤ 64 KiB);
//   - check-5s: check mode at a 5 s interval (2,000 Checks/s) for
//     VIGIL_BENCH_SCALE_CHECK (default 60s): false evictions (target 0)
//     and CPU.
//
// Metrics as in BenchmarkCheckCost.
//
//	VIGIL_INTEGRATION_NORACE=1 go test -run '^$' -bench Scale -benchtime 1x ./integration/
func BenchmarkScale(b *testing.B) {
	benchSetup(b, "vigil, three fleet helper processes (10,000 health servers), this process (reads vigil's log; idle otherwise)")
	f := startFleet(b, 10000, 0)
	baseline := baselineRSS(b, f.addrs[0])
	b.Run("watch", func(b *testing.B) {
		interval := benchDuration(b, "VIGIL_BENCH_SCALE_WATCH_INTERVAL", 5*time.Second)
		measureHealthScale(b, f, 100, fmt.Sprintf("mode: watch\ninterval: %v\ntimeout: 1s", interval), "", baseline, benchDuration(b, "VIGIL_BENCH_STEADY", 20*time.Second))
	})
	b.Run("check-5s", func(b *testing.B) {
		measureHealthScale(b, f, 100, "mode: check\ninterval: 5s\ntimeout: 1s", "", baseline, benchDuration(b, "VIGIL_BENCH_SCALE_CHECK", 60*time.Second))
	})
}

// BenchmarkLoadReportCost (issue 18) is what ORCA load reports cost:
// 10,000 endpoints (100 clusters of 100, three fleet helper processes) in
// watch mode at a 5 s interval, as BenchmarkScale's watch, first with
// round_robin (no reports), then with weighted_round_robin and every
// endpoint streaming a load report every 10 s (1,000 reports/s into
// vigil, and each cluster's picker rebuilt every second). vigil's CPU is
// measured over VIGIL_BENCH_STEADY (default 30s: three rounds of
// reports). Metrics as in BenchmarkCheckCost; fleet-cpu-% shows the
// reports being sent.
//
//	VIGIL_INTEGRATION_NORACE=1 go test -run '^$' -bench LoadReportCost -benchtime 1x ./integration/
func BenchmarkLoadReportCost(b *testing.B) {
	benchSetup(b, "vigil, three fleet helper processes (10,000 health and ORCA servers), this process (reads vigil's log; idle otherwise)")
	f := startFleet(b, 10000, 0)
	baseline := baselineRSS(b, f.addrs[0])
	health := "mode: watch\ninterval: 5s\ntimeout: 1s"
	window := benchDuration(b, "VIGIL_BENCH_STEADY", 30*time.Second)
	b.Run("none", func(b *testing.B) {
		measureHealthScale(b, f, 100, health, "", baseline, window)
	})
	b.Run("reports-10s", func(b *testing.B) {
		measureHealthScale(b, f, 100, health, "lb_policy: weighted_round_robin\nload_reports:\n  period: 10s", baseline, window)
	})
}

// baselineRSS is the resident memory of a vigil checking one endpoint, in
// KiB, 3 s after its start.
func baselineRSS(b *testing.B, endpoint string) int64 {
	b.Helper()
	v := startVigil(b, renderBenchConfig(nil, []benchCluster{{name: "one", endpoints: []string{endpoint}, health: "mode: check\ninterval: 1s"}}))
	v.wait(15*time.Second, 0, match("endpoint admitted"), "the endpoint admitted")
	time.Sleep(3 * time.Second)
	rss, _ := procMem(b, v.cmd.Process.Pid)
	v.kill()
	return rss
}

// measureHealthScale runs a vigil checking every endpoint of f, in
// clusters of perCluster, and reports what it costs at steady state.
func measureHealthScale(b *testing.B, f *fleet, perCluster int, health, extra string, baselineKiB int64, window time.Duration) {
	b.Helper()
	reportLoad(b)
	var clusters []benchCluster
	for i := 0; i < len(f.addrs); i += perCluster {
		clusters = append(clusters, benchCluster{
			name:      fmt.Sprintf("c%04d", len(clusters)),
			endpoints: f.addrs[i:min(i+perCluster, len(f.addrs))],
			health:    health,
			extra:     extra,
		})
	}
	n := len(f.addrs)
	start := time.Now()
	v := startVigil(b, renderBenchConfig(nil, clusters))
	pid := v.cmd.Process.Pid
	last, ok := v.waitAllHealthy(3*time.Minute, n)
	if !ok {
		b.Fatalf("not all %d endpoints healthy 3 minutes after vigil's start; log records: %v", n, v.tally(0))
	}
	admitted := recordTime(b, last).Sub(start)
	healthyAt10s := v.healthyAt(start.Add(10 * time.Second))
	startup := v.tally(0)
	b.Logf("all %d endpoints healthy %v after vigil's start; log records until then: %v", n, admitted.Round(time.Millisecond), startup)

	time.Sleep(3 * time.Second) // let the start-up burst pass
	from := v.mark()
	cpu0, fleet0, t0 := procCPU(b, pid), f.cpu(b), time.Now()
	time.Sleep(window)
	cpu, fleetCPU, elapsed := procCPU(b, pid)-cpu0, f.cpu(b)-fleet0, time.Since(t0)
	rss, hwm := procMem(b, pid)
	evictedStartup := v.count(0, match("endpoint evicted")) - v.count(from, match("endpoint evicted"))
	evictedSteady := v.count(from, match("endpoint evicted"))
	b.Logf("log records in the measured %v: %v", window, v.tally(from))
	if rs := v.logs.find(from, match("endpoint evicted")); len(rs) > 0 {
		b.Logf("first false eviction: %v", rs[0])
	}

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(n), "endpoints")
	b.ReportMetric(admitted.Seconds(), "admit-s")
	b.ReportMetric(float64(healthyAt10s), "healthy-at-10s")
	b.ReportMetric(100*cpu.Seconds()/elapsed.Seconds(), "cpu-%")
	b.ReportMetric(100*fleetCPU.Seconds()/elapsed.Seconds(), "fleet-cpu-%")
	b.ReportMetric(float64(rss)/1024, "rss-MiB")
	b.ReportMetric(float64(hwm)/1024, "hwm-MiB")
	b.ReportMetric(float64(rss-baselineKiB)/float64(n), "rss-KiB/endpoint")
	// Every backend is healthy throughout: each eviction is a false one.
	// They are reported, not failed on: this is a capacity figure.
	b.ReportMetric(float64(evictedStartup), "evicted-startup")
	b.ReportMetric(float64(evictedSteady), "evicted-steady")
}

// healthyAt counts the endpoints healthy at time t, from the log records
// written until then.
func (v *vigilProc) healthyAt(t time.Time) int {
	healthy := map[string]bool{}
	for _, r := range v.logs.find(0, func(r record) bool { return strings.HasPrefix(r.msg(), "endpoint ") }) {
		at, err := time.Parse(time.RFC3339Nano, r.str("time"))
		if err != nil || at.After(t) {
			continue
		}
		key := r.str("cluster") + "/" + r.str("endpoint")
		switch r.msg() {
		case "endpoint admitted", "endpoint readmitted":
			healthy[key] = true
		case "endpoint evicted", "endpoint removed":
			delete(healthy, key)
		}
	}
	return len(healthy)
}

// waitAllHealthy waits until n endpoints are healthy at once (their latest
// record is "endpoint admitted" or "endpoint readmitted") and returns the
// record that made it n, or false after timeout.
func (v *vigilProc) waitAllHealthy(timeout time.Duration, n int) (record, bool) {
	l := v.logs
	deadline := time.After(timeout)
	healthy := map[string]bool{}
	count, next := 0, 0
	for {
		l.mu.Lock()
		for ; next < len(l.records); next++ {
			r := l.records[next]
			key := r.str("cluster") + "/" + r.str("endpoint")
			switch r.msg() {
			case "endpoint admitted", "endpoint readmitted":
				if !healthy[key] {
					healthy[key] = true
					if count++; count == n {
						l.mu.Unlock()
						return r, true
					}
				}
			case "endpoint evicted":
				if healthy[key] {
					healthy[key] = false
					count--
				}
			}
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			return nil, false
		}
	}
}

// tally counts log records from index from on by message, and evictions
// by reason.
func (v *vigilProc) tally(from int) map[string]int {
	out := map[string]int{}
	for _, r := range v.logs.find(from, func(record) bool { return true }) {
		key := r.msg()
		if key == "endpoint evicted" {
			key += " " + r.str("reason")
		}
		out[key]++
	}
	return out
}
