package integration

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkReload (issue 5) measures a reload in which one endpoint
// changes, in configurations of 100, 1,000 and 10,000 endpoints (clusters
// of 10, all in watch mode): the cost must follow the change, not the
// configuration's size. Cluster c0000 has a grpc listener and 10 backends
// in this process, plus a spare; the other clusters' endpoints are health
// servers of the fleet helper processes. With a tight RPC loop running
// through the listener, each reload swaps c0000's tenth endpoint for the
// spare (and back on the next one) by rewriting the file (write to a
// temporary file and rename, as editors do), and measures from just before
// the write:
//
//   - reload-*-ms: until vigil's "config reloaded" record (its clock);
//   - apply-p50-ms: from vigil's "config file changed" record (the
//     debounced file event) to "config reloaded": load, diff and apply;
//   - added-*-ms: until the first RPC arrives at the new endpoint, i.e.
//     it is loaded, probed, admitted and routable (target ≤ 100 ms);
//   - removed-*-ms: until the last RPC arrives at the removed endpoint
//     (found as in BenchmarkEviction; 0 if none arrived after the write).
//
// VIGIL_BENCH_RELOADS (default 10) reloads per size; p50 and max are
// reported, and late-rpcs counts RPCs that reached the removed endpoint
// after it had visibly stopped getting them.
//
//	VIGIL_INTEGRATION_NORACE=1 go test -run '^$' -bench Reload -benchtime 1x ./integration/
func BenchmarkReload(b *testing.B) {
	benchSetup(b, "vigil, three fleet helper processes (the other clusters' health servers), this process (c0000's 11 backends, the RPC loop, the log reader)")
	const perCluster = 10
	sizes := []int{100, 1000, 10000}
	reloads := benchInt(b, "VIGIL_BENCH_RELOADS", 10)
	f := startFleet(b, sizes[len(sizes)-1]-perCluster, 0)
	backends := make([]*tracedBackend, perCluster+1) // the last is the spare
	for i := range backends {
		backends[i] = startTracedBackend(b)
	}
	const health = "mode: watch\ninterval: 5s\ntimeout: 1s"
	render := func(size int, tenth *tracedBackend) string {
		first := make([]string, 0, perCluster)
		for _, be := range backends[:perCluster-1] {
			first = append(first, be.addr)
		}
		clusters := []benchCluster{{name: "c0000", endpoints: append(first, tenth.addr), health: health}}
		others := f.addrs[:size-perCluster]
		for i := 0; i < len(others); i += perCluster {
			clusters = append(clusters, benchCluster{name: fmt.Sprintf("c%04d", len(clusters)), endpoints: others[i : i+perCluster], health: health})
		}
		return renderBenchConfig([]benchListener{{name: "api", protocol: "grpc", cluster: "c0000"}}, clusters)
	}

	for _, size := range sizes {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			reportLoad(b)
			in, out := backends[perCluster-1], backends[perCluster]
			v := startVigil(b, render(size, in))
			if _, ok := v.waitAllHealthy(3*time.Minute, size); !ok {
				b.Fatalf("not all %d endpoints healthy 3 minutes after vigil's start; log records: %v", size, v.tally(0))
			}
			loop := startRPCLoop(b, v.listener("api"), 2)
			waitUntil(b, 10*time.Second, func() bool { return in.calls.Load() > 10 && backends[0].calls.Load() > 10 }, "c0000's backends get RPCs")

			var reloaded, applied, added, removed []time.Duration
			late := 0
			for range reloads {
				out.first.Store(0)
				text := render(size, out)
				from := v.mark()
				written := time.Now()
				v.rewrite(text)
				r, _ := v.wait(10*time.Second, from, func(r record) bool {
					return r.msg() == "config reloaded" || r.msg() == "config rejected"
				}, "config reloaded")
				if r.msg() != "config reloaded" || r.num("endpoints_added") != 1 || r.num("endpoints_removed") != 1 {
					b.Fatalf("reload record %v; want one endpoint added and one removed", r)
				}
				reloaded = append(reloaded, recordTime(b, r).Sub(written))
				if changed := v.logs.find(from, match("config file changed")); len(changed) > 0 {
					applied = append(applied, recordTime(b, r).Sub(recordTime(b, changed[0])))
				}
				waitUntil(b, 10*time.Second, func() bool { return out.first.Load() != 0 }, "the new endpoint gets RPCs")
				added = append(added, time.Unix(0, out.first.Load()).Sub(written))
				last, calls := waitStopped(b, in, backends[0], 10*time.Second)
				removed = append(removed, max(0, last.Sub(written)))
				time.Sleep(5 * time.Millisecond)
				late += int(in.calls.Load() - calls)
				in, out = out, in
			}
			loop.stop()
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(size), "endpoints")
			b.ReportMetric(ms(percentile(reloaded, 0.5)), "reload-p50-ms")
			b.ReportMetric(ms(percentile(reloaded, 1)), "reload-max-ms")
			b.ReportMetric(ms(percentile(applied, 0.5)), "apply-p50-ms")
			b.ReportMetric(ms(percentile(added, 0.5)), "added-p50-ms")
			b.ReportMetric(ms(percentile(added, 1)), "added-max-ms")
			b.ReportMetric(ms(percentile(removed, 0.5)), "removed-p50-ms")
			b.ReportMetric(ms(percentile(removed, 1)), "removed-max-ms")
			b.ReportMetric(float64(late), "late-rpcs")
			b.ReportMetric(float64(loop.errs.Load()), "errors")
			if late > 0 {
				b.Errorf("%d RPCs reached a removed endpoint after it had stopped getting them", late)
			}
			if n := loop.errs.Load(); n > 0 {
				b.Errorf("%d RPCs failed across the reloads; first: %v", n, loop.err())
			}
		})
	}
}
