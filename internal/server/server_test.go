package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startBackend runs a gRPC server with the standard health service.
func startBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return ln.Addr().String()
}

func parse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

func configFor(listenerAddr, protocol string, endpoints []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "admin:\n  address: \"\"\nshutdown:\n  timeout: 1s\nlisteners:\n")
	fmt.Fprintf(&b, "  - name: l\n    address: %s\n    protocol: %s\n    cluster: c\n", listenerAddr, protocol)
	b.WriteString("clusters:\n  - name: c\n    endpoints:\n")
	for _, e := range endpoints {
		fmt.Fprintf(&b, "      - address: %s\n", e)
	}
	b.WriteString("    health_check:\n      interval: 50ms\n      timeout: 50ms\n")
	return b.String()
}

func newServer(t *testing.T) *Server {
	t.Helper()
	store, err := state.New()
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Store: store})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func healthOf(s *Server, addr string) checker.Health {
	e, _ := s.store.Snapshot().Endpoint(nil, "c", addr)
	if e == nil {
		return checker.Health(255)
	}
	return e.Status.Health
}

// churnConfig has a steady cluster "base" (not probed, so it has no
// connections that come and go) and, when endpoints are given, a cluster
// "c" of them.
func churnConfig(base string, endpoints []string) string {
	var b strings.Builder
	b.WriteString("admin:\n  address: \"\"\nshutdown:\n  timeout: 1s\nlisteners:\n")
	b.WriteString("  - name: l\n    address: 127.0.0.1:0\n    protocol: tcp\n    cluster: base\n")
	fmt.Fprintf(&b, "clusters:\n  - name: base\n    endpoints:\n      - address: %s\n    health_check:\n      mode: none\n", base)
	if len(endpoints) > 0 {
		b.WriteString("  - name: c\n    endpoints:\n")
		for _, e := range endpoints {
			fmt.Fprintf(&b, "      - address: %s\n", e)
		}
		b.WriteString("    health_check:\n      interval: 100ms\n      timeout: 100ms\n")
	}
	return b.String()
}

// TestRemovedEndpointsLeaveNothingBehind adds endpoints (and their cluster)
// through reloads, removes them again, and checks that their probers,
// connections, drains and cluster runtime are all gone: the goroutines are
// back to what they were before.
func TestRemovedEndpointsLeaveNothingBehind(t *testing.T) {
	base := startBackend(t)
	var churn []string
	for range 10 {
		churn = append(churn, startBackend(t))
	}
	s := newServer(t)
	defer s.Shutdown(context.Background())
	if err := s.Start(parse(t, churnConfig(base, nil))); err != nil {
		t.Fatal(err)
	}
	<-s.Ready()
	baseline := goleak.IgnoreCurrent()

	for round := range 3 {
		// The cluster comes with all its endpoints, loses half, then goes.
		if err := s.Reload(parse(t, churnConfig(base, churn))); err != nil {
			t.Fatal(err)
		}
		for _, a := range churn {
			waitFor(t, fmt.Sprintf("round %d: %s healthy", round, a), func() bool { return healthOf(s, a) == checker.Healthy })
		}
		if err := s.Reload(parse(t, churnConfig(base, churn[:5]))); err != nil {
			t.Fatal(err)
		}
		for _, a := range churn[5:] {
			waitFor(t, fmt.Sprintf("round %d: %s drained", round, a), func() bool { return healthOf(s, a) == checker.Health(255) })
		}
		if err := s.Reload(parse(t, churnConfig(base, nil))); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("round %d: cluster c retired", round), func() bool {
			c, _ := s.store.Snapshot().Cluster(nil, "c")
			return c == nil
		})
	}
	if err := goleak.Find(baseline); err != nil {
		t.Fatalf("goroutines left behind by removed endpoints: %v", err)
	}
}

func TestStartReportsBusyAddressWithPosition(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s := newServer(t)
	err = s.Start(parse(t, configFor(busy.Addr().String(), "grpc", []string{startBackend(t)})))
	var list config.ErrorList
	if !errors.As(err, &list) || len(list) != 1 || list[0].Path != "listeners[0].address" || list[0].Line == 0 {
		t.Fatalf("Start = %v; want one positioned error at listeners[0].address", err)
	}
	if !strings.Contains(list[0].Error(), "address already in use") {
		t.Errorf("error %q does not say why", list[0].Error())
	}
}

func TestReloadToBusyAddressKeepsServing(t *testing.T) {
	backend := startBackend(t)
	s := newServer(t)
	defer s.Shutdown(context.Background())
	if err := s.Start(parse(t, configFor("127.0.0.1:0", "tcp", []string{backend}))); err != nil {
		t.Fatal(err)
	}
	addr := s.listeners["l"].acc.Addr().String()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if err := s.Reload(parse(t, configFor(busy.Addr().String(), "tcp", []string{backend}))); err == nil {
		t.Fatal("reload to a busy address succeeded")
	}
	if got := s.listeners["l"].acc.Addr().String(); got != addr {
		t.Fatalf("listener moved to %s after a failed reload", got)
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("the old listener no longer accepts: %v", err)
	}
	conn.Close()
}

// TestProtocolChangeKeepsTheSocket switches a listener from tcp to grpc on
// the same address: the port stays bound throughout, and the proxy's own
// health service answers on it afterwards.
func TestProtocolChangeKeepsTheSocket(t *testing.T) {
	backend := startBackend(t)
	s := newServer(t)
	defer s.Shutdown(context.Background())
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()
	if err := s.Start(parse(t, configFor(addr, "tcp", []string{backend}))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "backend healthy", func() bool { return healthOf(s, backend) == checker.Healthy })
	acc := s.listeners["l"].acc
	if err := s.Reload(parse(t, configFor(addr, "grpc", []string{backend}))); err != nil {
		t.Fatal(err)
	}
	if s.listeners["l"].acc != acc {
		t.Fatal("the socket was replaced")
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "c"})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("own health of cluster c after the switch = %v, %v", resp, err)
	}
}

func TestOwnHealthFollowsReadinessAndShutdown(t *testing.T) {
	backend := startBackend(t)
	s := newServer(t)
	if err := s.Start(parse(t, configFor("127.0.0.1:0", "grpc", []string{backend}))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "backend healthy", func() bool { return healthOf(s, backend) == checker.Healthy })
	<-s.Ready()
	if !s.Serving() {
		t.Fatal("not serving once ready")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := s.Health().Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("own health = %v, %v", resp, err)
	}
	s.Shutdown(context.Background())
	if s.Serving() {
		t.Fatal("serving after shutdown")
	}
	resp, err = s.Health().Check(ctx, &healthpb.HealthCheckRequest{Service: "c"})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("cluster health after shutdown = %v, %v", resp, err)
	}
}
