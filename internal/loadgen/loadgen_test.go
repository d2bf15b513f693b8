package loadgen

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/internal/interoptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunRequests(t *testing.T) {
	srv := interoptest.StartServer(t)
	r, err := Run(context.Background(), Config{
		Target: srv.Addr, Concurrency: 4, Conns: 2, Requests: 200,
		RequestSize: 1024, ResponseSize: 1024, Warmup: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 200 || r.Errors != 0 {
		t.Fatalf("result %v, want 200 RPCs and no error (first error %v)", r, r.FirstErr)
	}
	if r.P50 <= 0 || r.P50 > r.P99 || r.P99 > r.Max || r.QPS <= 0 {
		t.Errorf("inconsistent percentiles: %v", r)
	}
}

func TestRunDuration(t *testing.T) {
	srv := interoptest.StartServer(t)
	r, err := Run(context.Background(), Config{Target: srv.Addr, Concurrency: 2, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests == 0 || r.Errors != 0 {
		t.Fatalf("result %v (first error %v)", r, r.FirstErr)
	}
}

func TestRunCountsFailures(t *testing.T) {
	srv := interoptest.StartServer(t)
	srv.GRPC.Stop()
	r, err := Run(context.Background(), Config{Target: srv.Addr, Requests: 3})
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors != 3 || r.FirstErr == nil || r.Requests != 0 {
		t.Fatalf("result %v, want 3 errors", r)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{{}, {Target: "127.0.0.1:1"}} {
		if _, err := Run(context.Background(), cfg); err == nil || !strings.HasPrefix(err.Error(), "loadgen:") {
			t.Errorf("Run(%+v) = %v, want a loadgen error", cfg, err)
		}
	}
}
