package loadgen

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/vigil-proxy/vigil/internal/interoptest"
)

func TestRunStreamsRequests(t *testing.T) {
	srv := interoptest.StartServer(t)
	started := 0
	r, err := RunStreams(context.Background(), Config{
		Target: srv.Addr, Concurrency: 3, Conns: 2, Requests: 150,
		RequestSize: 1024, ResponseSize: 1024, Warmup: 2,
		OnMeasureStart: func() { started++ },
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 150 || r.Errors != 0 {
		t.Fatalf("result %v, want 150 round trips and no error (first error %v)", r, r.FirstErr)
	}
	if r.P50 <= 0 || r.P50 > r.P99 || r.P99 > r.Max || r.QPS <= 0 {
		t.Errorf("inconsistent percentiles: %v", r)
	}
	if started != 1 {
		t.Errorf("OnMeasureStart called %d times, want once", started)
	}
}

func TestRunStreamsDuration(t *testing.T) {
	srv := interoptest.StartServer(t)
	r, err := RunStreams(context.Background(), Config{Target: srv.Addr, Concurrency: 2, Duration: 200 * time.Millisecond, ResponseSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests == 0 || r.Errors != 0 {
		t.Fatalf("result %v (first error %v)", r, r.FirstErr)
	}
}

func TestRunStreamsFailsOnDeadServer(t *testing.T) {
	srv := interoptest.StartServer(t)
	srv.GRPC.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := RunStreams(ctx, Config{Target: srv.Addr, Requests: 3})
	// Opening a stream may fail at once, or only at its first message.
	if err == nil && (r.Errors == 0 || r.Requests != 0) {
		t.Fatalf("RunStreams on a stopped server = %v, nil; want an error", r)
	}
	if err != nil && !strings.HasPrefix(err.Error(), "loadgen: open stream 0 to "+srv.Addr) {
		t.Errorf("error %q does not say which stream failed where", err)
	}
}

func TestRunStreamsRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{{}, {Target: "127.0.0.1:1"}} {
		if _, err := RunStreams(context.Background(), cfg); err == nil || !strings.HasPrefix(err.Error(), "loadgen:") {
			t.Errorf("RunStreams(%+v) = %v, want a loadgen error", cfg, err)
		}
	}
}

func TestRunCallsOnMeasureStartAfterWarmup(t *testing.T) {
	var served atomic.Int64
	count := grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		served.Add(1)
		return h(ctx, req)
	})
	srv := interoptest.StartServer(t, count)
	var warmedUp []int64
	r, err := Run(context.Background(), Config{
		Target: srv.Addr, Requests: 5, Warmup: 3,
		OnMeasureStart: func() { warmedUp = append(warmedUp, served.Load()) },
	})
	if err != nil || r.Requests != 5 {
		t.Fatalf("Run = %v, %v", r, err)
	}
	if len(warmedUp) != 1 || warmedUp[0] != 3 {
		t.Errorf("OnMeasureStart saw %v UnaryCalls served; want one call, after the 3 warm-up RPCs", warmedUp)
	}
}
