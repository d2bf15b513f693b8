package grpcproxy

import (
	"strings"
	"testing"

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
