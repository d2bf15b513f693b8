package grpcproxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/route"
)

func namedCluster(t testing.TB, name string, eps ...*balancer.Endpoint) *balancer.Cluster {
	t.Helper()
	cl := balancer.NewCluster(name)
	setHealthy(cl, nil, eps...)
	return cl
}

// TestRoutesByMethodServiceAuthority routes one listener's RPCs to three
// backends: a method route before its service's route, an authority
// route, and no default (UNIMPLEMENTED for the rest).
func TestRoutesByMethodServiceAuthority(t *testing.T) {
	a, b, c := startBackend(t, nil), startBackend(t, nil), startBackend(t, nil)
	ca, cb, cc := namedCluster(t, "a", endpointFor(t, a.addr)), namedCluster(t, "b", endpointFor(t, b.addr)), namedCluster(t, "c", endpointFor(t, c.addr))
	p, addr := startProxy(t, nil, Options{})
	p.SetRoutes(route.New([]route.Route{
		{Match: route.Match{Authority: "admin.example.com"}, Cluster: cc},
		{Match: route.Match{Service: "grpc.testing.TestService", Method: "EmptyCall"}, Cluster: ca},
		{Match: route.Match{Service: "grpc.testing.TestService"}, Cluster: cb},
	}, nil))
	ctx := ctxFor(t)

	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	if _, err := tc.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	admin := testgrpc.NewTestServiceClient(dialClient(t, addr, grpc.WithAuthority("Admin.Example.com:8443")))
	if _, err := admin.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
		t.Fatal(err)
	}
	if a.calls.Load() != 1 || b.calls.Load() != 1 || c.calls.Load() != 1 {
		t.Errorf("calls a=%d b=%d c=%d, want 1 each", a.calls.Load(), b.calls.Load(), c.calls.Load())
	}

	// A service no route names, and no default.
	err := dialClient(t, addr).Invoke(ctx, "/other.v1.Other/Get", &testgrpc.Empty{}, &testgrpc.Empty{})
	if st := status.Convert(err); st.Code() != codes.Unimplemented || st.Message() != "no route for /other.v1.Other/Get" {
		t.Errorf("unrouted call: %v, want UNIMPLEMENTED no route for /other.v1.Other/Get", err)
	}
	// With a default, it goes there.
	p.SetRoutes(route.New([]route.Route{{Match: route.Match{Service: "grpc.testing.TestService"}, Cluster: cb}}, ca))
	err = dialClient(t, addr).Invoke(ctx, "/other.v1.Other/Get", &testgrpc.Empty{}, &testgrpc.Empty{})
	if status.Code(err) != codes.Unimplemented || strings.Contains(status.Convert(err).Message(), "no route") || a.calls.Load() != 1 {
		// The backend has no such service: its own UNIMPLEMENTED.
		t.Errorf("default route: %v (a calls %d)", err, a.calls.Load())
	}
}

// TestRouteRetriesInItsCluster: an RPC whose route's cluster has only an
// unreachable endpoint fails there; it is never retried in another
// cluster (the default, here).
func TestRouteRetriesInItsCluster(t *testing.T) {
	good := startBackend(t, nil)
	dead := namedCluster(t, "dead", endpointFor(t, refusedAddr(t)), endpointFor(t, refusedAddr(t)))
	def := namedCluster(t, "default", endpointFor(t, good.addr))
	p, addr := startProxy(t, nil, Options{})
	p.SetRoutes(route.New([]route.Route{{Match: route.Match{Service: "grpc.testing.TestService", Method: "UnaryCall"}, Cluster: dead}}, def))
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	_, err := tc.UnaryCall(ctxFor(t), &testgrpc.SimpleRequest{})
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "cluster dead (tried 2)") {
		t.Errorf("UnaryCall: %v, want UNAVAILABLE in cluster dead (tried 2)", err)
	}
	if _, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
		t.Fatal(err)
	}
	if n := good.calls.Load(); n != 1 {
		t.Errorf("the default's backend had %d calls, want 1 (EmptyCall only)", n)
	}
}

// hangingServer holds every UnaryCall until its context ends, and reports
// the deadline the backend saw and that the call ended.
type hangingServer struct {
	testgrpc.UnimplementedTestServiceServer
	deadlines chan time.Duration
	ended     chan error
	// ignore, when set, makes the call ignore its context until it is
	// closed: a backend that sends no status of its own.
	ignore chan struct{}
}

func (h *hangingServer) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	d, ok := ctx.Deadline()
	left := time.Duration(-1)
	if ok {
		left = time.Until(d)
	}
	h.deadlines <- left
	if h.ignore != nil {
		<-h.ignore
	}
	<-ctx.Done()
	h.ended <- ctx.Err()
	return nil, status.FromContextError(ctx.Err()).Err()
}

// TestRouteTimeout: a route's timeout ends the RPC with DEADLINE_EXCEEDED
// from vigil, the backend sees it as its deadline and sees the stream
// end; a client deadline shorter than the route's is the one the backend
// is told.
func TestRouteTimeout(t *testing.T) {
	h := &hangingServer{deadlines: make(chan time.Duration, 2), ended: make(chan error, 2)}
	be := startBackend(t, h)
	cl := namedCluster(t, "slow", endpointFor(t, be.addr))
	p, addr := startProxy(t, nil, Options{})
	const timeout = 300 * time.Millisecond
	p.SetRoutes(route.New([]route.Route{{Match: route.Match{Service: "grpc.testing.TestService"}, Cluster: cl, Timeout: timeout}}, nil))
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))

	// The backend's context ends with the deadline it was told, and it
	// answers DEADLINE_EXCEEDED itself, or vigil's timer does first.
	_, err := tc.UnaryCall(ctxFor(t), &testgrpc.SimpleRequest{}) // a 30s client deadline
	if st := status.Convert(err); st.Code() != codes.DeadlineExceeded {
		t.Fatalf("UnaryCall: %v, want DEADLINE_EXCEEDED", err)
	}
	if left := <-h.deadlines; left <= 0 || left > timeout {
		t.Errorf("the backend's deadline was %v away, want at most the route's %v", left, timeout)
	}
	select {
	case err := <-h.ended:
		if err == nil {
			t.Error("the backend's call ended without error")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the backend never saw its call end")
	}

	// A backend that never answers: vigil ends the call itself.
	h.ignore = make(chan struct{})
	_, err = tc.UnaryCall(ctxFor(t), &testgrpc.SimpleRequest{})
	if st := status.Convert(err); st.Code() != codes.DeadlineExceeded || !strings.Contains(st.Message(), "route timeout of 300ms") {
		t.Fatalf("UnaryCall: %v, want DEADLINE_EXCEEDED from vigil's route timeout", err)
	}
	<-h.deadlines
	close(h.ignore)
	<-h.ended
	h.ignore = nil

	// A client deadline shorter than the route's: the backend is told the
	// client's.
	p.SetRoutes(route.New([]route.Route{{Match: route.Match{Service: "grpc.testing.TestService"}, Cluster: cl, Timeout: time.Hour}}, nil))
	ctx, cancel := context.WithTimeout(ctxFor(t), 20*time.Second)
	defer cancel()
	go func() { _, _ = tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}) }()
	if left := <-h.deadlines; left <= 0 || left > 20*time.Second {
		t.Errorf("the backend's deadline was %v away, want the client's (at most 20s)", left)
	}
	cancel()
	<-h.ended
}

func TestApplyTimeout(t *testing.T) {
	h := applyTimeout([]hpack.HeaderField{{Name: ":path", Value: "/a.B/C"}, {Name: "grpc-timeout", Value: "1S"}}, 2*time.Second)
	if h[1].Value != "1S" {
		t.Errorf("a sooner client deadline was replaced: %v", h)
	}
	h = applyTimeout(h, 500*time.Millisecond)
	if h[1].Value != "500000u" {
		t.Errorf("a later client deadline was kept: %v", h)
	}
	if h = applyTimeout(h[:1], time.Second); len(h) != 2 || h[1].Value != "1000000u" {
		t.Errorf("no grpc-timeout added: %v", h)
	}
}
