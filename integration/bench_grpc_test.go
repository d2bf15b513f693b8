package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"

	"github.com/vigil-proxy/vigil/internal/loadgen"
)

// BenchmarkGRPCLoad (issue 3) puts closed-loop gRPC load on two backends
// (cmd/demo-backend processes): unary UnaryCall with 1 KiB each way, and
// bidi FullDuplexCall streams playing ping-pong with 1 KiB messages, at
// concurrency 1 (one connection) and 64 (four connections, 16 RPCs or
// streams each), for VIGIL_BENCH_GRPC_DURATION (default 5s) per run:
//
//   - direct: the client balances round robin over both backends itself;
//   - vigil: through a grpc listener (round_robin cluster of the two);
//   - haproxy: mode http, proto h2 on both sides, balance roundrobin;
//   - nginx: grpc_pass to an upstream of the two, kept-alive connections.
//
// Metrics: rps (RPCs, or stream round trips, per second), p50-µs and
// p99-µs latency, proxy-cpu-µs/rpc (the proxy process tree's CPU per RPC
// from /proc), backends-cpu-µs/rpc, errors. benchsummary computes the
// throughput ratio and the added p50 against direct. Targets: CPU per unary
// RPC ≤ 60 µs (HAProxy's), stretch 30 µs; rps at concurrency 64 ≥ 70% of
// direct; added p50 at concurrency 1 < 100 µs.
//
//	VIGIL_INTEGRATION_NORACE=1 go test -run '^$' -bench GRPCLoad -benchtime 1x ./integration/
func BenchmarkGRPCLoad(b *testing.B) {
	benchSetup(b, "this process (load generator), 2 demo-backend processes, the proxy being measured (the others idle)")
	duration := benchDuration(b, "VIGIL_BENCH_GRPC_DURATION", 5*time.Second)
	backends := []*demoBackend{startDemoBackend(b, "be1"), startDemoBackend(b, "be2")}
	upstreams := []string{backends[0].addr, backends[1].addr}
	backendsCPU := func(tb testing.TB) time.Duration {
		return procCPU(tb, backends[0].cmd.Process.Pid) + procCPU(tb, backends[1].cmd.Process.Pid)
	}

	v := startVigil(b, renderBenchConfig(
		[]benchListener{{name: "api", protocol: "grpc", cluster: "load"}},
		[]benchCluster{{name: "load", endpoints: upstreams, health: "mode: check\ninterval: 5s\ntimeout: 1s"}},
	))
	v.waitRecords(15*time.Second, 0, match("endpoint admitted"), 2, "both backends admitted")
	direct := proxyUnderTest{name: "direct", addr: "static:///backends"}
	targets := []proxyUnderTest{
		direct,
		vigilProxy(v, "api"),
		startExternalProxy(b, "haproxy", haproxyGRPC(upstreams)),
		startExternalProxy(b, "nginx", nginxGRPC(upstreams)),
	}
	directDial := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(staticResolver{scheme: "static", addrs: upstreams}),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
	}

	type loadKind struct {
		name   string
		run    func(context.Context, loadgen.Config) (loadgen.Result, error)
		warmup int
	}
	kinds := []loadKind{{"unary", loadgen.Run, 200}, {"stream", loadgen.RunStreams, 20}}
	for _, kind := range kinds {
		b.Run(kind.name, func(b *testing.B) {
			for _, concurrency := range []int{1, 64} {
				b.Run(fmt.Sprintf("c%d", concurrency), func(b *testing.B) {
					for _, target := range targets {
						b.Run(target.name, func(b *testing.B) {
							if target.skip != "" {
								b.Skip(target.skip)
							}
							reportLoad(b)
							cfg := loadgen.Config{
								Target:      target.addr,
								Concurrency: concurrency,
								Conns:       min(concurrency, 4),
								Duration:    duration,
								RequestSize: 1024, ResponseSize: 1024,
								Warmup: kind.warmup,
							}
							if target.name == "direct" {
								cfg.DialOptions = directDial
							}
							var proxyBefore, backendsBefore time.Duration
							cfg.OnMeasureStart = func() {
								if target.cpu != nil {
									proxyBefore = target.cpu(b)
								}
								backendsBefore = backendsCPU(b)
							}
							r, err := kind.run(context.Background(), cfg)
							if err != nil {
								b.Fatal(err)
							}
							backendsUsed := backendsCPU(b) - backendsBefore
							var proxyUsed time.Duration
							if target.cpu != nil {
								proxyUsed = target.cpu(b) - proxyBefore
							}
							if r.Requests == 0 {
								b.Fatalf("no RPC succeeded: %v (first error %v)", r, r.FirstErr)
							}
							b.ReportMetric(0, "ns/op")
							b.ReportMetric(r.QPS, "rps")
							b.ReportMetric(float64(r.P50.Nanoseconds())/1e3, "p50-µs")
							b.ReportMetric(float64(r.P99.Nanoseconds())/1e3, "p99-µs")
							b.ReportMetric(float64(r.Errors), "errors")
							b.ReportMetric(float64(backendsUsed.Nanoseconds())/1e3/float64(r.Requests), "backends-cpu-µs/rpc")
							if target.cpu != nil {
								b.ReportMetric(float64(proxyUsed.Nanoseconds())/1e3/float64(r.Requests), "proxy-cpu-µs/rpc")
							}
							b.Logf("%s", r)
							if r.Errors > 0 {
								b.Errorf("%d RPCs failed through %s; first: %v", r.Errors, target.name, r.FirstErr)
							}
						})
					}
				})
			}
		})
	}
}

// staticResolver resolves its scheme to a fixed list of addresses, so that
// a direct client balances over the same backends as the proxies.
type staticResolver struct {
	scheme string
	addrs  []string
}

func (r staticResolver) Build(_ resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	var state resolver.State
	for _, a := range r.addrs {
		state.Endpoints = append(state.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}})
	}
	if err := cc.UpdateState(state); err != nil {
		return nil, fmt.Errorf("static resolver: %w", err)
	}
	return nopResolver{}, nil
}

func (r staticResolver) Scheme() string { return r.scheme }

type nopResolver struct{}

func (nopResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (nopResolver) Close()                                {}
