package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/internal/loadgen"
)

// BenchmarkGRPCRoutes (issue 15): the end-to-end cost of routing, through
// the real binary. One vigil has two grpc listeners on the same cluster of
// two demo backends: "none" without routes, "routes100" with 100 routes
// (99 authority routes that do not match, each compared on the way, then
// the service route that takes grpc.testing.TestService). Closed-loop
// unary 1 KiB load at concurrency 16 runs through each in turn, the order
// alternated every round, for VIGIL_BENCH_ROUTES_ROUNDS rounds (default 3)
// of VIGIL_BENCH_ROUTES_DURATION (default 3s). Metrics: the medians of
// vigil's CPU per RPC (from /proc) for each, their ratio, and the load
// average; each round is logged.
//
//	VIGIL_INTEGRATION_NORACE=1 go test -run '^$' -bench GRPCRoutes -benchtime 1x ./integration/
func BenchmarkGRPCRoutes(b *testing.B) {
	benchSetup(b, "this process (load generator), 2 demo-backend processes, vigil")
	duration := benchDuration(b, "VIGIL_BENCH_ROUTES_DURATION", 3*time.Second)
	rounds := benchInt(b, "VIGIL_BENCH_ROUTES_ROUNDS", 3)
	backends := []*demoBackend{startDemoBackend(b, "be1"), startDemoBackend(b, "be2")}
	var routes strings.Builder
	routes.WriteString("routes:\n")
	for i := range 99 {
		fmt.Fprintf(&routes, "  - {authority: host%d.example.com, cluster: load}\n", i)
	}
	routes.WriteString("  - {name: test, service: grpc.testing.TestService, cluster: load}\n")
	v := startVigil(b, renderBenchConfig(
		[]benchListener{
			{name: "none", protocol: "grpc", cluster: "load"},
			{name: "routes100", protocol: "grpc", cluster: "load", extra: routes.String()},
		},
		[]benchCluster{{name: "load", endpoints: []string{backends[0].addr, backends[1].addr}, health: "mode: check\ninterval: 5s\ntimeout: 1s"}},
	))
	v.waitRecords(15*time.Second, 0, match("endpoint admitted"), 2, "both backends admitted")
	target := map[string]proxyUnderTest{"none": vigilProxy(v, "none"), "routes100": vigilProxy(v, "routes100")}

	b.ReportMetric(0, "ns/op")
	perRPC := map[string][]float64{}
	load := []float64{loadAverage()}
	for round := range rounds {
		order := []string{"none", "routes100"}
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, name := range order {
			p := target[name]
			var before time.Duration
			r, err := loadgen.Run(context.Background(), loadgen.Config{
				Target: p.addr, Concurrency: 16, Conns: 4, Duration: duration,
				RequestSize: 1024, ResponseSize: 1024, Warmup: 200,
				OnMeasureStart: func() { before = p.cpu(b) },
			})
			if err != nil {
				b.Fatal(err)
			}
			used := p.cpu(b) - before
			if r.Requests == 0 || r.Errors > 0 {
				b.Fatalf("%s: %d RPCs, %d failed (first error %v)", name, r.Requests, r.Errors, r.FirstErr)
			}
			us := float64(used.Nanoseconds()) / 1e3 / float64(r.Requests)
			perRPC[name] = append(perRPC[name], us)
			b.Logf("round %d %s: %.1f µs of vigil CPU per RPC, %.0f rps, load average %.2f", round+1, name, us, r.QPS, loadAverage())
		}
		load = append(load, loadAverage())
	}
	median := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[len(s)/2]
	}
	none, routed := median(perRPC["none"]), median(perRPC["routes100"])
	b.ReportMetric(none, "none-cpu-µs/rpc")
	b.ReportMetric(routed, "routes100-cpu-µs/rpc")
	b.ReportMetric(routed/none, "ratio")
	b.ReportMetric(median(load), "loadavg")
	b.Logf("none %v, routes100 %v (µs per RPC by round)", perRPC["none"], perRPC["routes100"])
}
