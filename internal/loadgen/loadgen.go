// Package loadgen is a small closed-loop gRPC load generator for vigil's
// benchmarks: Concurrency workers each send unary
// grpc.testing.TestService/UnaryCall RPCs (the interop service, as served
// by internal/interoptest and cmd/demo-backend) back to back over Conns
// client connections, for a duration or a number of requests, and report
// throughput, latency percentiles and the process CPU time per RPC.
//
// Run it against a backend directly and then through vigil to get the
// proxy's cost: throughput ratio, added p50 latency, added CPU (when vigil
// runs in the same process, as in the in-package benchmarks).
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// Config describes one load run.
type Config struct {
	// Target is the host:port to load.
	Target string
	// Concurrency is the number of RPCs in flight (workers); default 1.
	Concurrency int
	// Conns is the number of client connections the workers share; default 1.
	Conns int
	// Requests stops the run after this many RPCs in total; 0 means no limit.
	Requests int
	// Duration stops the run after this long; 0 means no limit. One of
	// Requests and Duration must be set.
	Duration time.Duration
	// RequestSize and ResponseSize are the payload sizes in bytes.
	RequestSize, ResponseSize int
	// Warmup RPCs per connection are sent first and not counted.
	Warmup int
	// DialOptions replace the default (insecure h2c) options.
	DialOptions []grpc.DialOption
	// OnMeasureStart, if set, is called once right before the measured part
	// starts (after dialing and warm-up): to sample another process's CPU
	// time over exactly the measured part, for instance.
	OnMeasureStart func()
}

// Result is what a run measured.
type Result struct {
	Requests int           // RPCs that succeeded
	Errors   int           // RPCs that failed
	FirstErr error         // the first failure, if any
	Elapsed  time.Duration // wall time of the measured part
	QPS      float64       // successful RPCs per second
	P50, P90 time.Duration // latency percentiles of successful RPCs
	P99, Max time.Duration
	// CPUPerRPC is this process's user+system CPU time per RPC during the
	// run (client side only, unless servers run in the same process).
	CPUPerRPC time.Duration
}

func (r Result) String() string {
	return fmt.Sprintf("%d RPCs (%d errors) in %v: %.0f/s, p50 %v, p90 %v, p99 %v, max %v, cpu %v/RPC",
		r.Requests, r.Errors, r.Elapsed.Round(time.Millisecond), r.QPS, r.P50, r.P90, r.P99, r.Max, r.CPUPerRPC)
}

// Run performs the load described by cfg until it is done or ctx ends.
func Run(ctx context.Context, cfg Config) (Result, error) {
	clients, closeAll, err := connect(&cfg)
	if err != nil {
		return Result{}, err
	}
	defer closeAll()
	req := &testgrpc.SimpleRequest{
		ResponseType: testgrpc.PayloadType_COMPRESSABLE,
		ResponseSize: int32(cfg.ResponseSize),
		Payload:      &testgrpc.Payload{Body: make([]byte, cfg.RequestSize)},
	}
	for _, c := range clients {
		for range cfg.Warmup {
			if _, err := c.UnaryCall(ctx, req); err != nil {
				return Result{}, fmt.Errorf("loadgen: warmup RPC to %s: %w", cfg.Target, err)
			}
		}
	}

	runCtx := ctx
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	var issued atomic.Int64
	type workerResult struct {
		lat      []time.Duration
		errors   int
		firstErr error
	}
	results := make([]workerResult, cfg.Concurrency)
	var wg sync.WaitGroup
	if cfg.OnMeasureStart != nil {
		cfg.OnMeasureStart()
	}
	cpuStart, start := cpuTime(), time.Now()
	for w := range cfg.Concurrency {
		wg.Go(func() {
			c := clients[w%len(clients)]
			res := &results[w]
			for runCtx.Err() == nil {
				if cfg.Requests > 0 && issued.Add(1) > int64(cfg.Requests) {
					return
				}
				t0 := time.Now()
				_, err := c.UnaryCall(runCtx, req)
				if err != nil {
					if dl, ok := runCtx.Deadline(); ok && cfg.Duration > 0 && ctx.Err() == nil && !time.Now().Before(dl) {
						// The run's time is up (grpc-go may notice the
						// deadline before the context does): not a failure.
						return
					}
					res.errors++
					if res.firstErr == nil {
						res.firstErr = err
					}
					continue
				}
				res.lat = append(res.lat, time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), cpuTime()-cpuStart

	var r Result
	var all []time.Duration
	for _, w := range results {
		all = append(all, w.lat...)
		r.Errors += w.errors
		if r.FirstErr == nil {
			r.FirstErr = w.firstErr
		}
	}
	r.Requests, r.Elapsed = len(all), elapsed
	if r.Requests > 0 {
		slices.Sort(all)
		pct := func(p int) time.Duration { return all[min(len(all)-1, len(all)*p/100)] }
		r.P50, r.P90, r.P99, r.Max = pct(50), pct(90), pct(99), all[len(all)-1]
		r.QPS = float64(r.Requests) / elapsed.Seconds()
		r.CPUPerRPC = cpu / time.Duration(r.Requests)
	}
	return r, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// connect validates cfg, fills in its defaults and opens its Conns
// connections; the caller closes them with closeAll.
func connect(cfg *Config) (clients []testgrpc.TestServiceClient, closeAll func(), err error) {
	if cfg.Target == "" {
		return nil, nil, errors.New("loadgen: no target")
	}
	if cfg.Requests <= 0 && cfg.Duration <= 0 {
		return nil, nil, errors.New("loadgen: set Requests or Duration")
	}
	cfg.Concurrency = max(cfg.Concurrency, 1)
	cfg.Conns = max(cfg.Conns, 1)
	dialOpts := cfg.DialOptions
	if len(dialOpts) == 0 {
		dialOpts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conns := make([]*grpc.ClientConn, 0, cfg.Conns)
	closeAll = func() {
		for _, cc := range conns {
			_ = cc.Close()
		}
	}
	for range cfg.Conns {
		cc, err := grpc.NewClient(cfg.Target, dialOpts...)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("loadgen: dial %s: %w", cfg.Target, err)
		}
		conns = append(conns, cc)
		clients = append(clients, testgrpc.NewTestServiceClient(cc))
	}
	return clients, closeAll, nil
}
