package grpcproxy

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/leastrequest"
	"github.com/vigil-proxy/vigil/balancer/roundrobin"
	_ "github.com/vigil-proxy/vigil/internal/interoptest" // traps grpclog.Fatal of interop cases
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// backend is a real gRPC server on loopback that records what reached it.
type backend struct {
	addr   string
	srv    *grpc.Server
	health *health.Server
	done   chan struct{}

	calls atomic.Int64
	mu    sync.Mutex
	md    metadata.MD // incoming metadata of the last RPC
	comp  string      // grpc-encoding of the last RPC's request
}

// startBackend serves svc (the interop TestService when nil) on
// 127.0.0.1:0 until the test ends.
func startBackend(t testing.TB, svc testgrpc.TestServiceServer, opts ...grpc.ServerOption) *backend {
	t.Helper()
	if svc == nil {
		svc = interop.NewTestServer()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	b := &backend{addr: ln.Addr().String(), done: make(chan struct{})}
	record := func(ctx context.Context) {
		b.calls.Add(1)
		md, _ := metadata.FromIncomingContext(ctx)
		var comp string
		if st, ok := grpc.ServerTransportStreamFromContext(ctx).(interface{ RecvCompress() string }); ok {
			comp = st.RecvCompress()
		}
		b.mu.Lock()
		b.md, b.comp = md, comp
		b.mu.Unlock()
	}
	opts = append(opts,
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			record(ctx)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			record(ss.Context())
			return h(srv, ss)
		}),
	)
	b.srv = grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(b.srv, svc)
	b.health = health.NewServer()
	healthgrpc.RegisterHealthServer(b.srv, b.health)
	go func() {
		defer close(b.done)
		_ = b.srv.Serve(ln)
	}()
	t.Cleanup(b.stop)
	return b
}

func (b *backend) stop() {
	b.srv.Stop()
	<-b.done
}

func (b *backend) last() (metadata.MD, string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.md, b.comp
}

// endpointFor returns the endpoint at addr, as the proxy's caller makes it.
func endpointFor(t testing.TB, addr string) *balancer.Endpoint {
	t.Helper()
	return balancer.NewEndpoint(addr)
}

// clusterOf returns a cluster named "orders" whose endpoints are all
// healthy, under policy (round_robin when nil).
func clusterOf(t testing.TB, policy balancer.Policy, eps ...*balancer.Endpoint) *balancer.Cluster {
	t.Helper()
	cl := balancer.NewCluster("orders")
	setHealthy(cl, policy, eps...)
	return cl
}

func setHealthy(cl *balancer.Cluster, policy balancer.Policy, eps ...*balancer.Endpoint) {
	if policy == nil {
		policy = roundrobin.Policy{}
	}
	members := make([]balancer.Member, len(eps))
	for i, ep := range eps {
		members[i] = balancer.Member{Endpoint: ep, Weight: 1, Healthy: true}
	}
	cl.Update(policy, 0, members)
}

var leastRequest = leastrequest.Policy{}

// startProxy serves a proxy for cl on 127.0.0.1:0 until the test ends.
func startProxy(t testing.TB, cl *balancer.Cluster, opts Options) (*Proxy, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	p := New(cl, opts)
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() {
		_ = p.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after Close, want nil", err)
		}
	})
	return p, ln.Addr().String()
}

// dialClient connects a test client to addr.
func dialClient(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatalf("NewClient(%s): %v", addr, err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// ctxFor is a context bounded by a generous deadline (loaded 2-core
// machines under -race are slow), cancelled when the test ends.
func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// compressionSeen is a client stats handler that records the grpc-encoding
// of the last response.
type compressionSeen struct {
	mu   sync.Mutex
	last string
}

func (c *compressionSeen) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return ctx
}
func (c *compressionSeen) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (c *compressionSeen) HandleConn(context.Context, stats.ConnStats) {}
func (c *compressionSeen) HandleRPC(_ context.Context, s stats.RPCStats) {
	if h, ok := s.(*stats.InHeader); ok {
		c.mu.Lock()
		c.last = h.Compression
		c.mu.Unlock()
	}
}

func (c *compressionSeen) get() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// recordingMetrics counts the proxy's metric hooks.
type recordingMetrics struct {
	mu       sync.Mutex
	started  map[string]int // endpoint -> RPCs
	finished map[string]int // code -> RPCs
	retried  int
	replayed map[string]int // reason -> RPCs
	conns    int
	rejected int
}

func newRecordingMetrics() *recordingMetrics {
	return &recordingMetrics{started: map[string]int{}, finished: map[string]int{}, replayed: map[string]int{}}
}

func (m *recordingMetrics) RPCStarted(_, ep string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.started[ep]++
}
func (m *recordingMetrics) RPCFinished(_, _, _, code string, _ time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.finished[code]++
}
func (m *recordingMetrics) RPCRetried(_, _ string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.retried++
}
func (m *recordingMetrics) RPCReplayed(_, _, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.replayed[reason]++
}
func (m *recordingMetrics) replays(reason string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.replayed[reason]
}
func (m *recordingMetrics) ConnOpened() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conns++
}
func (m *recordingMetrics) ConnClosed() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conns--
}
func (m *recordingMetrics) ConnRejected() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rejected++
}

// deadListener accepts TCP connections and resets them at once: a backend
// that "resets on connect".
func deadListener(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // RST instead of FIN
			}
			_ = c.Close()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// refusedAddr is a loopback address where nothing listens.
func refusedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}
