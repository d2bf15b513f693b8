package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/grpcproxy"
	_ "github.com/vigil-proxy/vigil/balancer/roundrobin"
	"github.com/vigil-proxy/vigil/balancer/tcpproxy"
	"github.com/vigil-proxy/vigil/internal/config"
)

// eventually polls cond until it returns nil or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// expect returns a condition that holds when the scraped series has want.
func expect(m *Metrics, t *testing.T, want float64, name string, labels ...string) func() error {
	return func() error {
		got, found := sample(scrape(t, m), name, labels...)
		if !found || got != want {
			return fmt.Errorf("%s%v = %v (found %v); want %v", name, labels, got, found, want)
		}
		return nil
	}
}

// newCluster returns a balancer cluster over the endpoints at addrs, all
// healthy.
func newCluster(t *testing.T, name string, eps ...*balancer.Endpoint) *balancer.Cluster {
	t.Helper()
	policy, ok := balancer.PolicyByName("round_robin")
	if !ok {
		t.Fatal("round_robin is not registered")
	}
	c := balancer.NewCluster(name)
	members := make([]balancer.Member, len(eps))
	for i, ep := range eps {
		members[i] = balancer.Member{Endpoint: ep, Weight: 1, Healthy: true}
	}
	c.Update(policy, 0, members)
	return c
}

// echoServer is a TCP backend that echoes what it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(c, c)
				_ = c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func serve(t *testing.T, srv interface {
	Serve(net.Listener) error
	Close() error
}) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func TestRealTCPProxyFeedsMetrics(t *testing.T) {
	backend := echoServer(t)
	s := newTestStore(t)
	s.addCluster("db", backend)
	s.addListener("raw", config.ProtocolTCP, "db")
	m := New(Options{Store: s.Store})

	ep := balancer.NewEndpoint(backend)
	proxy := tcpproxy.New(newCluster(t, "db", ep), tcpproxy.Options{Metrics: m.TCP("raw")})
	addr := serve(t, proxy)

	client, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(client, buf); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	eventually(t, "listener connection open", expect(m, t, 1, "vigil_listener_active_connections", "listener", "raw"))
	eventually(t, "endpoint connection open", expect(m, t, 1, "vigil_endpoint_active_connections", "cluster", "db", "endpoint", backend))
	if st, _ := m.Endpoint("db", backend); st.Inflight != 1 {
		t.Fatalf("endpoint inflight = %d", st.Inflight)
	}

	_ = client.Close()
	eventually(t, "connection closed", expect(m, t, 1, "vigil_tcp_connections_closed_total", "listener", "raw", "outcome", "ok"))
	fams := scrape(t, m)
	mustSample(t, fams, 0, "vigil_listener_active_connections", "listener", "raw")
	mustSample(t, fams, 0, "vigil_endpoint_active_connections", "cluster", "db", "endpoint", backend)
	mustSample(t, fams, 5, "vigil_tcp_bytes_total", "listener", "raw", "direction", "to_upstream")
	mustSample(t, fams, 5, "vigil_tcp_bytes_total", "listener", "raw", "direction", "to_client")
	mustSample(t, fams, 1, "vigil_listener_connections_total", "listener", "raw")
}

// testService answers EmptyCall, and UnaryCall with the status it is asked
// for.
type testService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (testService) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	return &testgrpc.Empty{}, nil
}

func (testService) UnaryCall(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if rs := req.GetResponseStatus(); rs != nil {
		return nil, status.Error(codes.Code(rs.GetCode()), rs.GetMessage())
	}
	return &testgrpc.SimpleResponse{}, nil
}

type grpcServer struct{ *grpc.Server }

func (s grpcServer) Close() error { s.Stop(); return nil }

func TestRealGRPCProxyFeedsMetrics(t *testing.T) {
	backendSrv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(backendSrv, testService{})
	backend := serve(t, grpcServer{backendSrv})

	s := newTestStore(t)
	s.addCluster("orders", backend)
	s.addListener("api", config.ProtocolGRPC, "orders")
	m := New(Options{Store: s.Store})

	proxy := grpcproxy.New(newCluster(t, "orders", balancer.NewEndpoint(backend)),
		grpcproxy.Options{Metrics: m.GRPC("api")})
	addr := serve(t, proxy)

	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := testgrpc.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 2 {
		if _, err := client.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
			t.Fatalf("EmptyCall through the proxy: %v", err)
		}
	}
	_, err = client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound)}})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("UnaryCall = %v; want NOT_FOUND", err)
	}

	fams := scrape(t, m)
	mustSample(t, fams, 2, "vigil_upstream_rq_total", "cluster", "orders", "route", "", "code", "OK")
	mustSample(t, fams, 1, "vigil_upstream_rq_total", "cluster", "orders", "route", "", "code", "NOT_FOUND")
	mustSample(t, fams, 3, "vigil_upstream_rq_duration_seconds", "cluster", "orders", "route", "")
	mustSample(t, fams, 0, "vigil_listener_active_streams", "listener", "api")
	mustSample(t, fams, 0, "vigil_endpoint_active_streams", "cluster", "orders", "endpoint", backend)
	mustSample(t, fams, 1, "vigil_listener_active_connections", "listener", "api")

	_ = cc.Close()
	eventually(t, "client connection closed", expect(m, t, 0, "vigil_listener_active_connections", "listener", "api"))
}
