package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// goleak checks that `vigil run`, the whole of it in this process, leaves
// no goroutine behind once it has returned.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRunStopsOnSIGTERMLeavingNothing runs `vigil run` in-process in front
// of a real backend, serves a health Check through it, sends the process
// SIGTERM and expects exit status 0; TestMain then finds no goroutine of
// the proxy left.
func TestRunStopsOnSIGTERMLeavingNothing(t *testing.T) {
	// The backend's socket now, its gRPC server once vigil has set up
	// gRPC's logging (grpclog's setters must run before any gRPC code).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	path := filepath.Join(t.TempDir(), "vigil.yaml")
	cfg := fmt.Sprintf(`admin:
  address: 127.0.0.1:0
log:
  format: json
shutdown:
  timeout: 2s
listeners:
  - name: api
    address: 127.0.0.1:0
    protocol: grpc
    cluster: demo
  - name: raw
    address: 127.0.0.1:0
    protocol: tcp
    cluster: demo
clusters:
  - name: demo
    endpoints:
      - address: %s
    health_check:
      interval: 100ms
      timeout: 100ms
`, ln.Addr())
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	pr, pw := io.Pipe()
	exit := make(chan int, 1)
	go func() {
		defer pw.Close()
		exit <- cli([]string{"run", "--config", path}, io.Discard, pw)
	}()
	// Read the log until the endpoint is admitted, then keep draining it.
	lines := bufio.NewScanner(pr)
	listeners := map[string]string{}
	admitted := false
	var served sync.WaitGroup
	defer served.Wait()
	for !admitted && lines.Scan() {
		var rec map[string]any
		if json.Unmarshal(lines.Bytes(), &rec) != nil {
			continue
		}
		switch rec["msg"] {
		case "config loaded":
			backend := grpc.NewServer()
			healthpb.RegisterHealthServer(backend, health.NewServer())
			served.Go(func() { _ = backend.Serve(ln) })
			defer backend.Stop()
		case "listening":
			listeners[fmt.Sprint(rec["listener"])] = fmt.Sprint(rec["address"])
		case "endpoint admitted":
			admitted = true
		case "cannot start":
			t.Fatalf("vigil could not start: %v", rec)
		}
	}
	var drained sync.WaitGroup
	drained.Go(func() { _, _ = io.Copy(io.Discard, pr) })
	defer drained.Wait()
	if !admitted {
		t.Fatalf("vigil ended before admitting its endpoint: %v", lines.Err())
	}

	// The proxy's own health, through the grpc listener; and a health Check
	// of the backend, through the tcp listener.
	for _, l := range []string{"api", "raw"} {
		conn, err := grpc.NewClient("passthrough:///"+listeners[l], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		cancel()
		_ = conn.Close()
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Check through listener %s: %v, %v", l, resp, err)
		}
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("vigil run exited with %d after SIGTERM; want 0", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("vigil run did not return within 20s of SIGTERM")
	}
}
