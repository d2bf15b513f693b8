package checker

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
)

// BenchmarkCheckOnce is the cost of one probe round in check mode: one
// Check on a reused connection to a backend on loopback.
func BenchmarkCheckOnce(b *testing.B) {
	be := startBackend(b, "", nil)
	conn := dial(b, be.addr)
	ctx := context.Background()
	if r := CheckOnce(ctx, conn, "", time.Second); !r.OK {
		b.Fatalf("warm-up probe: %+v", r)
	}
	b.ReportAllocs()
	for b.Loop() {
		if r := CheckOnce(ctx, conn, "", time.Second); !r.OK {
			b.Fatalf("probe: %+v", r)
		}
	}
}

// BenchmarkProbeRound is one round of a prober in check mode, through the
// group: the Check on the group's probe connection (with its small-buffer
// options) plus the per-result step for a steadily healthy endpoint.
func BenchmarkProbeRound(b *testing.B) {
	be := startBackend(b, "", nil)
	g := NewGroup(Config{Mode: ModeCheck}, GroupOptions{Cluster: "bench", Logger: discardLogger()})
	b.Cleanup(g.Close)
	ep, cfg, _ := g.insert(be.addr, Status{Health: Healthy, Successes: 2})
	p := newProber(g, ep, cfg)
	b.Cleanup(p.dropConn)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		r := p.probe(ctx)
		if !r.OK {
			b.Fatalf("probe: %+v", r)
		}
		g.report(ep, p.mode, cfg, r)
	}
}

// BenchmarkStepNoChange is the per-result step alone for a result that
// changes nothing (the common case): no lock is taken.
func BenchmarkStepNoChange(b *testing.B) {
	g := NewGroup(Config{Mode: ModeCheck}, GroupOptions{Cluster: "bench", Logger: discardLogger()})
	ep, cfg, _ := g.insert("10.0.0.1:80", Status{Health: Healthy, Successes: 2})
	r := Result{OK: true, Latency: time.Millisecond}
	b.ReportAllocs()
	for b.Loop() {
		g.report(ep, ModeCheck, cfg, r)
	}
}

func BenchmarkTCPOnce(b *testing.B) {
	lis := listen(b, "")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	b.Cleanup(func() { _ = lis.Close(); <-done })
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if r := TCPOnce(ctx, lis.Addr().String(), time.Second); !r.OK {
			b.Fatalf("probe: %+v", r)
		}
	}
}

const helperEnv = "CHECKER_HELPER_BACKENDS"

// TestHelperBackends is not a test: run by BenchmarkEndpointMemory as a
// separate process, it serves grpc-go's health service on N ports, prints
// them, and serves until its stdin closes. Keeping the backends out of the
// measuring process makes the figures the checker's alone.
func TestHelperBackends(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv(helperEnv))
	if err != nil {
		t.Skip("helper process for BenchmarkEndpointMemory")
	}
	srv := grpc.NewServer()
	healthgrpc.RegisterHealthServer(srv, health.NewServer())
	done := make(chan struct{}, n)
	for range n {
		lis := listen(t, "")
		fmt.Println(lis.Addr().String())
		go func() { _ = srv.Serve(lis); done <- struct{}{} }()
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	srv.Stop()
	for range n {
		<-done
	}
}

// helperBackends starts TestHelperBackends with n backends and returns
// their addresses.
func helperBackends(b *testing.B, n int) []string {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperBackends$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("start helper backends: %v", err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	var addrs []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "ready" {
		addrs = append(addrs, sc.Text())
	}
	if len(addrs) != n {
		b.Fatalf("helper started %d backends, want %d", len(addrs), n)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return addrs
}

// BenchmarkEndpointMemory measures what the checker costs per endpoint: N
// endpoints, each with its probe connection (and Watch stream), all healthy
// and probed every second, against backends in a helper process. It runs
// once whatever b.N; run it with -benchtime=1x.
func BenchmarkEndpointMemory(b *testing.B) {
	n := 1000
	if s := os.Getenv("CHECKER_BENCH_ENDPOINTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	for _, mode := range []Mode{ModeCheck, ModeWatch, ModeTCP} {
		b.Run(fmt.Sprintf("mode=%s/N=%d", mode, n), func(b *testing.B) {
			addrs := helperBackends(b, n)
			before := memSnapshot()
			g := NewGroup(Config{Mode: mode, Interval: time.Second, Timeout: 5 * time.Second, Jitter: 0.1},
				GroupOptions{Cluster: "bench", Logger: discardLogger()})
			for _, a := range addrs {
				g.Add(a, Status{})
			}
			waitFor(b, "all endpoints healthy", func() bool { h, _ := g.Counts(); return h == n })
			time.Sleep(3 * time.Second) // a few probe rounds: steady state
			after := memSnapshot()
			g.Close()

			heap := float64(after.heap) - float64(before.heap)
			stack := float64(after.stack) - float64(before.stack)
			b.ReportMetric(heap/float64(n), "heap-B/endpoint")
			b.ReportMetric(stack/float64(n), "stack-B/endpoint")
			b.ReportMetric((heap+stack)/float64(n), "B/endpoint")
			b.ReportMetric(float64(after.goroutines-before.goroutines)/float64(n), "goroutines/endpoint")
		})
	}
}

type memStats struct {
	heap, stack uint64
	goroutines  int
}

func memSnapshot() memStats {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memStats{heap: m.HeapAlloc, stack: m.StackInuse, goroutines: runtime.NumGoroutine()}
}
