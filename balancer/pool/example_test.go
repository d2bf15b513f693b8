package pool_test

import (
	"fmt"
	"log/slog"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/vigil-proxy/vigil/balancer/pool"
	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/checker"
)

// A health-checked, balanced pool of two real gRPC backends, one of which
// says NOT_SERVING: every pick goes to the other one.
func Example() {
	serving, stop1 := backend(healthpb.HealthCheckResponse_SERVING)
	defer stop1()
	draining, stop2 := backend(healthpb.HealthCheckResponse_NOT_SERVING)
	defer stop2()

	// The eviction log, on stdout without what changes from run to run
	// (the time, the ports, the counts, which depend on which probe
	// answers first), so that the example can check it.
	noTime := func(_ []string, a slog.Attr) slog.Attr {
		switch a.Key {
		case slog.TimeKey, "endpoint", "healthy", "total":
			return slog.Attr{}
		}
		return a
	}
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: noTime}))

	p := pool.New("orders", pool.Options{Sinks: []event.Sink{pool.LogSink(log)}, Startup: true})
	defer p.Close()
	p.Apply(pool.Spec{
		HealthCheck: checker.DefaultConfig(),
		Endpoints:   []pool.Endpoint{{Address: serving}, {Address: draining}},
	})
	<-p.Ready()

	picked := map[string]int{}
	for range 100 {
		picked[p.Cluster().Pick().Address()]++ // no lock, no allocation
	}
	fmt.Println("picks to the serving backend:", picked[serving])
	// Unordered output:
	// level=INFO msg="endpoint admitted" cluster=orders check=check
	// level=WARN msg="endpoint evicted" cluster=orders check=check reason=NOT_SERVING failures=1
	// picks to the serving backend: 100
}

// backend serves the standard health service with status st on a port of
// 127.0.0.1; stop stops it.
func backend(st healthpb.HealthCheckResponse_ServingStatus) (addr string, stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", st)
	healthpb.RegisterHealthServer(srv, hs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	return ln.Addr().String(), func() {
		srv.Stop()
		<-done
	}
}
