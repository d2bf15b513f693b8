package integration

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// BenchmarkEviction (issue 4) measures how long vigil keeps routing RPCs
// to a backend after it turns NOT_SERVING, by routing, not by log: two
// backends run in this process, a tight loop of UnaryCalls (2 workers, one
// connection) goes through vigil's grpc listener, and each backend stamps
// every RPC's arrival. Each flip:
//
//  1. waits a random phase (up to 20 ms in watch mode, up to the interval
//     in check mode, so that flips fall anywhere between two probes);
//  2. stamps t0 and calls SetServingStatus("", NOT_SERVING) on backend A;
//  3. waits until B has served 200 RPCs in a row since A's last arrival
//     (with A routable, round robin would have sent it about 100 of them);
//     the eviction latency is A's last arrival minus t0, 0 if A got nothing
//     after t0 (the resolution is the loop's gap between two RPCs to A,
//     about 0.1-0.3 ms);
//  4. checks that A got nothing more ("late-rpcs" counts any that did),
//     sets A SERVING again and waits for its next RPC (readmission).
//
// watch: 100 flips (VIGIL_BENCH_WATCH_FLIPS); check-1s: check mode at
// interval 1s, healthy_threshold 1, 50 flips (VIGIL_BENCH_CHECK_FLIPS), for
// comparison. Metrics: evict-p50-ms, evict-p99-ms, evict-max-ms,
// readmit-p50-ms, late-rpcs, errors (failed RPCs of the loop), rpc-gap-µs
// (the mean time between two RPCs to A: the resolution). Targets
// (watch): median ≤ 5 ms, p99 ≤ 50 ms.
//
//	VIGIL_INTEGRATION_NORACE=1 go test -run '^$' -bench Eviction -benchtime 1x ./integration/
func BenchmarkEviction(b *testing.B) {
	benchSetup(b, "this process (both backends, the RPC loop), vigil")
	modes := []struct {
		name, health string
		flips        int
		phase        time.Duration
	}{
		{"watch", "mode: watch\ninterval: 5s\ntimeout: 1s", benchInt(b, "VIGIL_BENCH_WATCH_FLIPS", 100), 20 * time.Millisecond},
		{"check-1s", "mode: check\ninterval: 1s\ntimeout: 500ms\nhealthy_threshold: 1", benchInt(b, "VIGIL_BENCH_CHECK_FLIPS", 50), time.Second},
	}
	for _, mode := range modes {
		b.Run(mode.name, func(b *testing.B) {
			reportLoad(b)
			flipped, other := startTracedBackend(b), startTracedBackend(b)
			v := startVigil(b, renderBenchConfig(
				[]benchListener{{name: "api", protocol: "grpc", cluster: "flip"}},
				[]benchCluster{{name: "flip", endpoints: []string{flipped.addr, other.addr}, health: mode.health}},
			))
			v.waitRecords(15*time.Second, 0, match("endpoint admitted"), 2, "both backends admitted")
			loop := startRPCLoop(b, v.listener("api"), 2)
			waitUntil(b, 10*time.Second, func() bool { return flipped.calls.Load() > 100 && other.calls.Load() > 100 }, "both backends get RPCs")

			var evictions, readmissions []time.Duration
			late := 0
			loopStart, okStart := time.Now(), loop.ok.Load()
			for range mode.flips {
				time.Sleep(rand.N(mode.phase))
				t0 := time.Now()
				flipped.serving(false)
				last, calls := waitStopped(b, flipped, other, 10*time.Second)
				evictions = append(evictions, max(0, last.Sub(t0)))

				// Anything A receives from now on came after vigil had
				// visibly stopped routing to it.
				time.Sleep(5 * time.Millisecond)
				late += int(flipped.calls.Load() - calls)
				flipped.first.Store(0)
				tr := time.Now()
				flipped.serving(true)
				waitUntil(b, 10*time.Second, func() bool { return flipped.first.Load() != 0 }, "readmitted backend gets RPCs again")
				readmissions = append(readmissions, time.Unix(0, flipped.first.Load()).Sub(tr))
			}
			loop.stop()
			// The resolution: the mean gap between two RPCs to A while it
			// is routable (round robin over two backends).
			gap := 2 * time.Since(loopStart) / time.Duration(max(1, loop.ok.Load()-okStart))
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(gap.Nanoseconds())/1e3, "rpc-gap-µs")
			b.ReportMetric(float64(len(evictions)), "flips")
			b.ReportMetric(ms(percentile(evictions, 0.50)), "evict-p50-ms")
			b.ReportMetric(ms(percentile(evictions, 0.99)), "evict-p99-ms")
			b.ReportMetric(ms(percentile(evictions, 1)), "evict-max-ms")
			b.ReportMetric(ms(percentile(readmissions, 0.50)), "readmit-p50-ms")
			b.ReportMetric(float64(late), "late-rpcs")
			b.ReportMetric(float64(loop.errs.Load()), "errors")
			if late > 0 {
				b.Errorf("%d RPCs reached a backend after vigil had stopped routing to it", late)
			}
			if n := loop.errs.Load(); n > 0 {
				b.Errorf("%d RPCs failed; first: %v", n, loop.err())
			}
		})
	}
}

// waitStopped waits until flipped has received no RPC while other served
// 200, and returns the time of flipped's last arrival and its call count
// then.
func waitStopped(tb testing.TB, flipped, other *tracedBackend, timeout time.Duration) (time.Time, int64) {
	tb.Helper()
	const streak = 200
	deadline := time.Now().Add(timeout)
	calls, otherAtLast := flipped.calls.Load(), other.calls.Load()
	for {
		time.Sleep(500 * time.Microsecond)
		if c := flipped.calls.Load(); c != calls {
			calls, otherAtLast = c, other.calls.Load()
			continue
		}
		if other.calls.Load()-otherAtLast >= streak {
			return time.Unix(0, flipped.last.Load()), calls
		}
		if time.Now().After(deadline) {
			tb.Fatalf("vigil still routes to the backend %v after it should have stopped (or no traffic flows)", timeout)
		}
	}
}

// percentile is the nearest-rank p-th percentile of ds (p in (0, 1]).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
