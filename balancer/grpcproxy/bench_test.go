package grpcproxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	grpcgzip "google.golang.org/grpc/encoding/gzip"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/route"
	"github.com/vigil-proxy/vigil/internal/accesslog"
	"github.com/vigil-proxy/vigil/internal/loadgen"
)

// Benchmarks run the client, the proxy and the backend in this process, so
// ns/op, allocs/op and cpu-ns/op of a "proxy" sub-benchmark include all
// three: the proxy's own cost is "proxy" minus "direct".
//
//	go test -run '^$' -bench . -benchmem ./balancer/grpcproxy/

// benchTargets starts one interop backend and a proxy in front of it and
// returns both addresses.
func benchTargets(b *testing.B) map[string]string {
	be := startBackend(b, nil)
	_, proxyAddr := startProxy(b, clusterOf(b, nil, endpointFor(b, be.addr)), Options{})
	return map[string]string{"direct": be.addr, "proxy": proxyAddr}
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measureCPU reports the process CPU time per operation of the benchmark
// loop run by f.
func measureCPU(b *testing.B, f func()) {
	start := cpuTime()
	f()
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

var payload1K = &testgrpc.SimpleRequest{
	ResponseType: testgrpc.PayloadType_COMPRESSABLE,
	ResponseSize: 1024,
	Payload:      &testgrpc.Payload{Body: make([]byte, 1024)},
}

func BenchmarkUnary1KiB(b *testing.B) {
	for _, name := range []string{"direct", "proxy"} {
		b.Run(name, func(b *testing.B) {
			addr := benchTargets(b)[name]
			tc := testgrpc.NewTestServiceClient(dialClient(b, addr))
			ctx := context.Background()
			if _, err := tc.UnaryCall(ctx, payload1K); err != nil {
				b.Fatal(err)
			}
			lat := make([]time.Duration, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			measureCPU(b, func() {
				for i := range b.N {
					start := time.Now()
					if _, err := tc.UnaryCall(ctx, payload1K); err != nil {
						b.Fatal(err)
					}
					lat[i] = time.Since(start)
				}
			})
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
		})
	}
}

// BenchmarkUnary1KiBOutlier is BenchmarkUnary1KiB's proxy RPC with the
// endpoint's outcomes counted or not: "outlier=on" sets on it the watch a
// pool with outlier_detection sets (failure_percentage on, so successes
// are counted too: the dearer case), which is all outlier detection adds
// to an RPC's path; the pool's review runs once an interval, off it.
func BenchmarkUnary1KiBOutlier(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "outlier=off"
		if on {
			name = "outlier=on"
		}
		b.Run(name, func(b *testing.B) {
			be := startBackend(b, nil)
			ep := endpointFor(b, be.addr)
			if on {
				ep.SetOutcomeWatch(&balancer.OutcomeWatch{Threshold: 5, Rates: true, Tripped: make(chan struct{}, 1)})
			}
			_, addr := startProxy(b, clusterOf(b, nil, ep), Options{})
			tc := testgrpc.NewTestServiceClient(dialClient(b, addr))
			ctx := context.Background()
			if _, err := tc.UnaryCall(ctx, payload1K); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			measureCPU(b, func() {
				for range b.N {
					if _, err := tc.UnaryCall(ctx, payload1K); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.StopTimer()
			if on {
				if s, f := ep.TakeOutcomes(); s < uint64(b.N) || f != 0 {
					b.Fatalf("outcomes counted: %d successes, %d failures; want at least %d successes", s, f, b.N)
				}
			}
		})
	}
}

// BenchmarkUnary1KiBAccessLog is BenchmarkUnary1KiB's proxy RPC with the
// access log off and on (JSON to a file in the test's directory): the
// record's copy into the log's buffer on the data path, and its
// formatting and write on the log's own goroutine, all in cpu-ns/op.
func BenchmarkUnary1KiBAccessLog(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "accesslog=off"
		if on {
			name = "accesslog=on"
		}
		b.Run(name, func(b *testing.B) {
			be := startBackend(b, nil)
			opts := Options{}
			var sink *accesslog.Sink
			var dropped atomic.Int64
			if on {
				var err error
				sink, err = accesslog.Open(filepath.Join(b.TempDir(), "access.log"), accesslog.Options{})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(sink.Close)
				opts.AccessLog = sink.Logger("bench", accesslog.JSON, func() { dropped.Add(1) })
			}
			_, addr := startProxy(b, clusterOf(b, nil, endpointFor(b, be.addr)), opts)
			tc := testgrpc.NewTestServiceClient(dialClient(b, addr))
			ctx := context.Background()
			if _, err := tc.UnaryCall(ctx, payload1K); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			measureCPU(b, func() {
				for range b.N {
					if _, err := tc.UnaryCall(ctx, payload1K); err != nil {
						b.Fatal(err)
					}
				}
				if on {
					// The writer's work is part of the cost: wait for it.
					for sink.Written()+uint64(dropped.Load()) < uint64(b.N)+1 {
						time.Sleep(time.Millisecond)
					}
				}
			})
			b.StopTimer()
			if on {
				b.ReportMetric(float64(dropped.Load())/float64(b.N), "dropped/op")
			}
		})
	}
}

// BenchmarkUnary1KiBGzip is the same RPC, gzip-compressed both ways. The
// proxy passes the compressed frames through as they are, so its share
// ("proxy" minus "direct") is that of BenchmarkUnary1KiB;
// BenchmarkGzipRecompress prices the alternative.
func BenchmarkUnary1KiBGzip(b *testing.B) {
	for _, name := range []string{"direct", "proxy"} {
		b.Run(name, func(b *testing.B) {
			addr := benchTargets(b)[name]
			tc := testgrpc.NewTestServiceClient(dialClient(b, addr, grpc.WithDefaultCallOptions(grpc.UseCompressor(grpcgzip.Name))))
			ctx := context.Background()
			if _, err := tc.UnaryCall(ctx, payload1K); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			measureCPU(b, func() {
				for range b.N {
					if _, err := tc.UnaryCall(ctx, payload1K); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkUnary1KiBParallel runs 64 concurrent callers on one client
// connection (SetParallelism(32) on GOMAXPROCS=2).
func BenchmarkUnary1KiBParallel(b *testing.B) {
	for _, name := range []string{"direct", "proxy"} {
		b.Run(name, func(b *testing.B) {
			addr := benchTargets(b)[name]
			tc := testgrpc.NewTestServiceClient(dialClient(b, addr))
			if _, err := tc.UnaryCall(context.Background(), payload1K); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetParallelism(32)
			b.ResetTimer()
			measureCPU(b, func() {
				b.RunParallel(func(pb *testing.PB) {
					ctx := context.Background()
					for pb.Next() {
						if _, err := tc.UnaryCall(ctx, payload1K); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}

// BenchmarkStreamPingPong1KiB is one message each way per op on a single
// long-lived bidi stream.
func BenchmarkStreamPingPong1KiB(b *testing.B) {
	req := &testgrpc.StreamingOutputCallRequest{
		ResponseType:       testgrpc.PayloadType_COMPRESSABLE,
		ResponseParameters: []*testgrpc.ResponseParameters{{Size: 1024}},
		Payload:            &testgrpc.Payload{Body: make([]byte, 1024)},
	}
	for _, name := range []string{"direct", "proxy"} {
		b.Run(name, func(b *testing.B) {
			addr := benchTargets(b)[name]
			tc := testgrpc.NewTestServiceClient(dialClient(b, addr))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s, err := tc.FullDuplexCall(ctx)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			measureCPU(b, func() {
				for range b.N {
					if err := s.Send(req); err != nil {
						b.Fatal(err)
					}
					if _, err := s.Recv(); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.StopTimer()
			_ = s.CloseSend()
			_, _ = s.Recv()
		})
	}
}

// BenchmarkUnary1MiB shows the passthrough codec's zero copy: the proxy
// adds far less than a message's worth of allocated bytes per RPC.
func BenchmarkUnary1MiB(b *testing.B) {
	req := &testgrpc.SimpleRequest{
		ResponseType: testgrpc.PayloadType_COMPRESSABLE,
		ResponseSize: 1 << 20,
		Payload:      &testgrpc.Payload{Body: make([]byte, 1<<20)},
	}
	for _, name := range []string{"direct", "proxy"} {
		b.Run(name, func(b *testing.B) {
			addr := benchTargets(b)[name]
			tc := testgrpc.NewTestServiceClient(dialClient(b, addr))
			ctx := context.Background()
			if _, err := tc.UnaryCall(ctx, req); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(2 << 20)
			b.ResetTimer()
			measureCPU(b, func() {
				for range b.N {
					if _, err := tc.UnaryCall(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkLoad runs internal/loadgen (closed loop, 1 KiB each way, one
// client connection) at concurrency 1 and 64 and reports throughput and
// latency percentiles, direct and through the proxy.
func BenchmarkLoad(b *testing.B) {
	for _, conc := range []int{1, 64} {
		for _, name := range []string{"direct", "proxy"} {
			b.Run(fmt.Sprintf("c%d/%s", conc, name), func(b *testing.B) {
				addr := benchTargets(b)[name]
				r, err := loadgen.Run(context.Background(), loadgen.Config{
					Target: addr, Concurrency: conc, Requests: b.N,
					RequestSize: 1024, ResponseSize: 1024, Warmup: 10,
				})
				if err != nil {
					b.Fatal(err)
				}
				if r.Errors > 0 {
					b.Fatalf("%d RPCs failed, first: %v", r.Errors, r.FirstErr)
				}
				b.ReportMetric(r.QPS, "rpc/s")
				b.ReportMetric(float64(r.P50.Nanoseconds()), "p50-ns")
				b.ReportMetric(float64(r.P99.Nanoseconds()), "p99-ns")
				b.ReportMetric(float64(r.CPUPerRPC.Nanoseconds()), "cpu-ns/op")
			})
		}
	}
}

// BenchmarkGzipRecompress is what a proxy that decompressed and recompressed
// every gzip message (to inspect or re-encode it) would spend per message,
// with pooled readers and writers at gzip's default level: the reason vigil
// forwards compressed frames untouched instead.
func BenchmarkGzipRecompress(b *testing.B) {
	for _, size := range []int{1 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			// Compressible like the interop COMPRESSABLE payload, but not
			// all zeros, so gzip does real work.
			msg := bytes.Repeat([]byte("vigil proxies grpc: "), size/20+1)[:size]
			var in bytes.Buffer
			zw := gzip.NewWriter(&in)
			_, _ = zw.Write(msg)
			_ = zw.Close()
			compressed := in.Bytes()

			var zr gzip.Reader
			var plain, out bytes.Buffer
			zw.Reset(&out)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := zr.Reset(bytes.NewReader(compressed)); err != nil {
					b.Fatal(err)
				}
				plain.Reset()
				if _, err := io.Copy(&plain, &zr); err != nil {
					b.Fatal(err)
				}
				out.Reset()
				zw.Reset(&out)
				if _, err := zw.Write(plain.Bytes()); err != nil {
					b.Fatal(err)
				}
				if err := zw.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUnary1KiBRoutes is BenchmarkUnary1KiB's proxied RPC through a
// listener without routes (routes=0: its default cluster) and through one
// with 100: 99 authority routes that do not match, each compared on the
// way, then the TestService route that does. The difference is what
// routing costs end to end.
func BenchmarkUnary1KiBRoutes(b *testing.B) {
	for _, n := range []int{0, 100} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			be := startBackend(b, nil)
			cl := clusterOf(b, nil, endpointFor(b, be.addr))
			p, addr := startProxy(b, cl, Options{})
			if n > 0 {
				routes := make([]route.Route, 0, n)
				for i := range n - 1 {
					routes = append(routes, route.Route{Match: route.Match{Authority: fmt.Sprintf("host%d.example.com", i)}, Cluster: cl})
				}
				routes = append(routes, route.Route{Name: "test", Match: route.Match{Service: "grpc.testing.TestService"}, Cluster: cl})
				p.SetRoutes(route.New(routes, nil))
			}
			tc := testgrpc.NewTestServiceClient(dialClient(b, addr))
			ctx := context.Background()
			if _, err := tc.UnaryCall(ctx, payload1K); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			measureCPU(b, func() {
				for range b.N {
					if _, err := tc.UnaryCall(ctx, payload1K); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
