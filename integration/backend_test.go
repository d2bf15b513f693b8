package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/interop"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/orca"
	"google.golang.org/grpc/status"

	"github.com/vigil-proxy/vigil/internal/ordersvc"
)

// backend is a real gRPC server on loopback, in the test process: the
// standard health service (or a controllable one) and grpc.testing's
// TestService, answering UnaryCall with its id as server_id.
type backend struct {
	id     string
	addr   string
	srv    *grpc.Server
	health *health.Server
	hits   atomic.Int64 // UnaryCalls served
	// load is what the backend's ORCA service reports (withLoad); nil
	// without one.
	load   orca.ServerMetricsRecorder
	probes atomic.Int64 // health Checks received

	// stall, when set, makes health Checks hang until their deadline.
	stall atomic.Bool

	// For outlier detection: calls counts every UnaryCall received, failed
	// or not, and with track set times holds when each arrived (off by
	// default: load and benchmark tests make millions); a non-zero
	// failCode fails failPercent of them (spread evenly) with that code
	// while the health service stays SERVING; hang makes them wait for
	// their context to end (a client's deadline or cancellation), inflight
	// counting those waiting and holds every one that ever waited (a test
	// that waits for "one more is held" needs the monotonic count: inflight
	// can drop as the previous held RPC ends while the next one arrives).
	calls                 atomic.Int64
	failCode, failPercent atomic.Uint32
	hang, track           atomic.Bool
	inflight, holds       atomic.Int64
	// reset, on a backend served overNetHTTP, makes every UnaryCall end
	// in an RST_STREAM(INTERNAL_ERROR) instead of an answer.
	reset atomic.Bool
	mu    sync.Mutex
	times []time.Time

	// onCall, if set, sees every UnaryCall's context first.
	onCall atomic.Pointer[func(context.Context)]
}

// callsIn counts the UnaryCalls the backend received in [from, to) and
// returns the latest of them (zero if none).
func (b *backend) callsIn(from, to time.Time) (n int, last time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, at := range b.times {
		if !at.Before(from) && at.Before(to) {
			n++
			last = at
		}
	}
	return n, last
}

// fail makes percent of the backend's UnaryCalls (100: every one) fail
// with code; codes.OK stops it.
func (b *backend) fail(code codes.Code, percent int) {
	b.failPercent.Store(uint32(percent))
	b.failCode.Store(uint32(code))
}

type backendOption func(*backendConfig)

type backendConfig struct {
	noHealth, netHTTP bool
	addr              string
	tls               *tls.Config
	// register adds services to the backend's server before it serves.
	register []func(*backend)
}

// overNetHTTP serves the gRPC server through net/http's HTTP/2 server
// (h2c, grpc.Server.ServeHTTP) rather than grpc-go's own transport, so
// that the backend can reset streams (see backend.reset): grpc-go's
// transport never resets a stream of its own accord.
func overNetHTTP() backendOption { return func(c *backendConfig) { c.netHTTP = true } }

// withTLS makes the backend serve gRPC over TLS with cfg (ALPN h2 is
// grpc-go's business).
func withTLS(cfg *tls.Config) backendOption { return func(c *backendConfig) { c.tls = cfg } }

// at makes the backend listen on addr (host:port) instead of a free port
// of 127.0.0.1.
func at(addr string) backendOption { return func(c *backendConfig) { c.addr = addr } }

// withoutHealth registers no health service at all.
func withoutHealth() backendOption { return func(c *backendConfig) { c.noHealth = true } }

func startBackend(t testing.TB, id string, opts ...backendOption) *backend {
	t.Helper()
	cfg := backendConfig{addr: "127.0.0.1:0"}
	for _, o := range opts {
		o(&cfg)
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		t.Fatalf("backend %s: %v", id, err)
	}
	var sopts []grpc.ServerOption
	if cfg.tls != nil {
		sopts = append(sopts, grpc.Creds(credentials.NewTLS(cfg.tls)))
	}
	b := &backend{id: id, addr: ln.Addr().String(), srv: grpc.NewServer(sopts...), health: health.NewServer()}
	if !cfg.noHealth {
		healthpb.RegisterHealthServer(b.srv, &countingHealth{b: b})
	}
	testpb.RegisterTestServiceServer(b.srv, &idServer{TestServiceServer: interop.NewTestServer(), b: b})
	// A second service, for routes: answers with the backend's id.
	ordersvc.Register(b.srv, id, nil)
	for _, r := range cfg.register {
		r(b)
	}
	done := make(chan struct{})
	if cfg.netHTTP {
		var protocols http.Protocols
		protocols.SetUnencryptedHTTP2(true)
		hs := &http.Server{Handler: b, Protocols: &protocols}
		go func() {
			defer close(done)
			_ = hs.Serve(ln)
		}()
		t.Cleanup(func() {
			_ = hs.Close()
			<-done
			b.srv.Stop()
		})
		return b
	}
	go func() {
		defer close(done)
		_ = b.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		b.srv.Stop()
		<-done
	})
	return b
}

// ServeHTTP is the backend served overNetHTTP: with reset set, a
// UnaryCall is counted as received and its stream reset (net/http
// answers a handler's ErrAbortHandler panic with RST_STREAM
// INTERNAL_ERROR, silently); everything else is the gRPC server's.
func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if b.reset.Load() && r.URL.Path == "/grpc.testing.TestService/UnaryCall" {
		b.arrived()
		panic(http.ErrAbortHandler)
	}
	b.srv.ServeHTTP(w, r)
}

// arrived counts a UnaryCall received, and its time when tracked, and
// returns how many came before it.
func (b *backend) arrived() int64 {
	n := b.calls.Add(1) - 1
	if b.track.Load() {
		b.mu.Lock()
		b.times = append(b.times, time.Now())
		b.mu.Unlock()
	}
	return n
}

// setStatus sets the whole-server health status ("") or a service's.
func (b *backend) setStatus(service string, s healthpb.HealthCheckResponse_ServingStatus) {
	b.health.SetServingStatus(service, s)
}

func (b *backend) serving(ok bool) {
	if ok {
		b.setStatus("", healthpb.HealthCheckResponse_SERVING)
	} else {
		b.setStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	}
}

// countingHealth is the standard health server, counting Checks and able
// to stall them.
type countingHealth struct {
	healthpb.UnimplementedHealthServer
	b *backend
}

func (h *countingHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.b.probes.Add(1)
	if h.b.stall.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return h.b.health.Check(ctx, req)
}

func (h *countingHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	return h.b.health.Watch(req, stream)
}

func (h *countingHealth) List(ctx context.Context, req *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	return h.b.health.List(ctx, req)
}

type idServer struct {
	testpb.TestServiceServer
	b *backend
}

func (s *idServer) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	n := s.b.arrived()
	if f := s.b.onCall.Load(); f != nil {
		(*f)(ctx)
	}
	if c := codes.Code(s.b.failCode.Load()); c != codes.OK {
		// The n-th call fails if it crosses a multiple of 100/percent:
		// percent of every 100 in a row, spread over them.
		if p := int64(s.b.failPercent.Load()); (n+1)*p/100 > n*p/100 {
			return nil, status.Errorf(c, "backend %s told to fail", s.b.id)
		}
	}
	if s.b.hang.Load() {
		s.b.holds.Add(1)
		s.b.inflight.Add(1)
		<-ctx.Done()
		s.b.inflight.Add(-1)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	resp, err := s.TestServiceServer.UnaryCall(ctx, req)
	if err != nil {
		return nil, err
	}
	s.b.hits.Add(1)
	resp.ServerId = s.b.id
	return resp, nil
}

// demoBackend is cmd/demo-backend running as a process of its own, for
// tests that kill a backend.
type demoBackend struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

func startDemoBackend(t testing.TB, id string, args ...string) *demoBackend {
	t.Helper()
	cmd := exec.Command(bin("demo-backend"), append([]string{"-addr", "127.0.0.1:0", "-id", id}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &demoBackend{cmd: cmd, done: make(chan struct{})}
	lines := bufio.NewReader(stdout)
	first, err := lines.ReadString('\n')
	if err != nil || !strings.HasPrefix(first, "listening ") {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("demo-backend printed %q, %v; want its address", first, err)
	}
	d.addr = strings.TrimSpace(strings.TrimPrefix(first, "listening "))
	go func() {
		_, _ = io.Copy(io.Discard, lines)
		_ = cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(d.kill)
	return d
}

func (d *demoBackend) kill() {
	select {
	case <-d.done:
	default:
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// client is a gRPC client of a vigil listener.
type client struct {
	conn *grpc.ClientConn
	tc   testpb.TestServiceClient
}

func dialClient(t testing.TB, addr string) *client {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &client{conn: conn, tc: testpb.NewTestServiceClient(conn)}
}

// call makes one UnaryCall and returns the id of the backend that served it.
func (c *client) call(ctx context.Context) (string, error) {
	resp, err := c.tc.UnaryCall(ctx, &testpb.SimpleRequest{FillServerId: true, ResponseSize: 16})
	if err != nil {
		return "", err
	}
	return resp.ServerId, nil
}

// callOverNewConnection makes one UnaryCall over a connection of its own:
// through a tcp listener, each connection is balanced on its own.
func callOverNewConnection(ctx context.Context, addr string) (string, error) {
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return (&client{conn: conn, tc: testpb.NewTestServiceClient(conn)}).call(ctx)
}
