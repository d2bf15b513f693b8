package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/vigil-proxy/vigil/internal/ordersvc"
)

// routesYAML renders a configuration with one grpc listener "edge" whose
// routes (YAML lines, each "- ..." starting a route) are given, an
// optional default cluster, and clusters name -> endpoints.
func routesYAML(def string, routes string, clusters ...yamlCluster) string {
	var b strings.Builder
	b.WriteString("admin:\n  address: 127.0.0.1:0\nlog:\n  format: json\n  level: debug\nshutdown:\n  timeout: 5s\nlisteners:\n")
	b.WriteString("  - name: edge\n    address: 127.0.0.1:0\n    protocol: grpc\n")
	if def != "" {
		fmt.Fprintf(&b, "    cluster: %s\n", def)
	}
	b.WriteString("    routes:\n")
	for _, line := range strings.Split(strings.Trim(routes, "\n"), "\n") {
		fmt.Fprintf(&b, "      %s\n", strings.TrimRight(line, " "))
	}
	b.WriteString("clusters:\n")
	for _, c := range clusters {
		fmt.Fprintf(&b, "  - name: %s\n    endpoints:\n", c.Name)
		for _, e := range c.Endpoints {
			fmt.Fprintf(&b, "      - address: %s\n", e)
		}
		b.WriteString("    health_check:\n      mode: check\n      interval: 100ms\n      timeout: 100ms\n      unhealthy_threshold: 2\n      healthy_threshold: 1\n")
	}
	return b.String()
}

func dialAuthority(t testing.TB, addr, authority string) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if authority != "" {
		opts = append(opts, grpc.WithAuthority(authority))
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// waitReady waits for vigil's own health to be SERVING: every cluster's
// first round of probes is done.
func waitReady(t testing.TB, conn *grpc.ClientConn) {
	t.Helper()
	hc := healthpb.NewHealthClient(conn)
	eventually(t, 20*time.Second, func() bool {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}, "vigil ready")
}

// TestRoutesServicesMethodsAuthority: one listener in front of four
// clusters, with traffic to each: orders.v1.Orders to one, its Charge
// method (a route before the service's) to another, grpc.testing's
// TestService to a third, and admin.example.com (any service) to a
// fourth, from a client dialing with that :authority; a service no route
// names fails UNIMPLEMENTED, as there is no default.
func TestRoutesServicesMethodsAuthority(t *testing.T) {
	orders, charge, tests, admin := startBackend(t, "orders"), startBackend(t, "charge"), startBackend(t, "tests"), startBackend(t, "admin")
	v := startVigil(t, routesYAML("", `
- authority: Admin.Example.com
  cluster: admin
- name: charge
  service: orders.v1.Orders
  method: Charge
  cluster: charge
- name: orders
  service: orders.v1.Orders
  cluster: orders
- service: grpc.testing.TestService
  cluster: tests
`, yamlCluster{Name: "orders", Endpoints: []string{orders.addr}}, yamlCluster{Name: "charge", Endpoints: []string{charge.addr}},
		yamlCluster{Name: "tests", Endpoints: []string{tests.addr}}, yamlCluster{Name: "admin", Endpoints: []string{admin.addr}}))
	addr := v.listener("edge")
	conn := dialAuthority(t, addr, "")
	waitReady(t, conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for range 10 {
		for _, c := range []struct{ method, want string }{{"Get", "orders"}, {"Charge", "charge"}} {
			if id, err := ordersvc.Call(ctx, conn, c.method); err != nil || id != c.want {
				t.Fatalf("orders %s: served by %q, %v; want %s", c.method, id, err, c.want)
			}
		}
		resp, err := testpb.NewTestServiceClient(conn).UnaryCall(ctx, &testpb.SimpleRequest{FillServerId: true})
		if err != nil || resp.ServerId != "tests" {
			t.Fatalf("TestService: served by %q, %v; want tests", resp.GetServerId(), err)
		}
	}
	// :authority with a port and in another case: the admin route, for
	// every service.
	adminConn := dialAuthority(t, addr, "admin.example.COM:8080")
	for _, call := range []func() (string, error){
		func() (string, error) { return ordersvc.Call(ctx, adminConn, "Get") },
		func() (string, error) {
			r, err := testpb.NewTestServiceClient(adminConn).UnaryCall(ctx, &testpb.SimpleRequest{FillServerId: true})
			return r.GetServerId(), err
		},
	} {
		if id, err := call(); err != nil || id != "admin" {
			t.Fatalf("with :authority admin.example.COM:8080: served by %q, %v; want admin", id, err)
		}
	}
	// Another :authority is not the admin route's.
	if id, err := ordersvc.Call(ctx, dialAuthority(t, addr, "api.example.com"), "Get"); err != nil || id != "orders" {
		t.Fatalf("with :authority api.example.com: served by %q, %v; want orders", id, err)
	}

	err := conn.Invoke(ctx, "/billing.v1.Billing/Charge", &testpb.SimpleRequest{}, &testpb.SimpleResponse{})
	if st := status.Convert(err); st.Code() != codes.Unimplemented || st.Message() != "no route for /billing.v1.Billing/Charge" {
		t.Fatalf("unrouted call: %v, want UNIMPLEMENTED no route for /billing.v1.Billing/Charge", err)
	}
	if orders.calls.Load() != 0 || admin.calls.Load() != 1 {
		t.Errorf("TestService calls: orders %d, admin %d; want 0 and 1", orders.calls.Load(), admin.calls.Load())
	}

	// The route label: a route's name, else its index.
	resp, err := http.Get("http://" + v.adminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, series := range []string{
		`vigil_upstream_rq_total{cluster="charge",code="OK",route="charge"} 10`,
		`vigil_upstream_rq_total{cluster="orders",code="OK",route="orders"} 11`,
		`vigil_upstream_rq_total{cluster="tests",code="OK",route="3"} 10`,
		`vigil_upstream_rq_total{cluster="admin",code="OK",route="0"} 2`,
	} {
		if !strings.Contains(string(body), series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
}

// TestRouteTimeout: a route's timeout shorter than the client's deadline
// ends the RPC with DEADLINE_EXCEEDED at the route's time, and the
// backend's call ends then too (it holds every call until its context
// ends: the backend saw the cancellation).
func TestRouteTimeout(t *testing.T) {
	slow := startBackend(t, "slow")
	slow.hang.Store(true)
	v := startVigil(t, routesYAML("slow", `
- service: grpc.testing.TestService
  method: UnaryCall
  cluster: slow
  timeout: 500ms
`, yamlCluster{Name: "slow", Endpoints: []string{slow.addr}}))
	conn := dialAuthority(t, v.listener("edge"), "")
	waitReady(t, conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := testpb.NewTestServiceClient(conn).UnaryCall(ctx, &testpb.SimpleRequest{})
	took := time.Since(start)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("UnaryCall: %v, want DEADLINE_EXCEEDED", err)
	}
	if took < 500*time.Millisecond || took > 15*time.Second {
		t.Errorf("the call ended after %v, want the route's 500ms (not the client's 20s)", took)
	}
	if slow.holds.Load() != 1 {
		t.Fatalf("the backend held %d calls, want 1", slow.holds.Load())
	}
	eventually(t, 10*time.Second, func() bool { return slow.inflight.Load() == 0 }, "the backend's call to end")
}

// TestRoutedServiceHealth: vigil's own health answers for a routed
// service name as its cluster's health, through grpc_health_probe
// -service, and cluster names still answer.
func TestRoutedServiceHealth(t *testing.T) {
	probe := grpcHealthProbe(t)
	orders := startBackend(t, "orders")
	v := startVigil(t, routesYAML("", `
- service: orders.v1.Orders
  cluster: orders
`, yamlCluster{Name: "orders", Endpoints: []string{orders.addr}}))
	addr := v.listener("edge")
	waitReady(t, dialAuthority(t, addr, ""))
	for _, svc := range []string{"orders.v1.Orders", "orders"} {
		if code, out := runProbe(t, probe, "-addr", addr, "-service", svc); code != 0 {
			t.Errorf("grpc_health_probe -service %s: exit %d: %s", svc, code, out)
		}
	}
	orders.serving(false)
	eventually(t, 20*time.Second, func() bool {
		code, _ := runProbe(t, probe, "-addr", addr, "-service", "orders.v1.Orders")
		return code != 0
	}, "orders.v1.Orders to turn NOT_SERVING with its cluster")
	if code, out := runProbe(t, probe, "-addr", addr, "-service", "orders.v1.Orders"); !strings.Contains(out, "NOT_SERVING") {
		t.Errorf("grpc_health_probe -service orders.v1.Orders: exit %d: %s, want NOT_SERVING", code, out)
	}
	orders.serving(true)
	eventually(t, 20*time.Second, func() bool {
		code, _ := runProbe(t, probe, "-addr", addr, "-service", "orders.v1.Orders")
		return code == 0
	}, "orders.v1.Orders SERVING again")
}

// TestRoutesReloadUnderLoad reloads the route table while clients call
// both services without pause: orders.v1.Orders moves to a cluster the
// same reload creates (applied once that cluster is warm), and back;
// zero RPCs fail and no connection is touched.
func TestRoutesReloadUnderLoad(t *testing.T) {
	a, b, tests := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "tests")
	clustersA := []yamlCluster{{Name: "a", Endpoints: []string{a.addr}}, {Name: "tests", Endpoints: []string{tests.addr}}}
	toA := routesYAML("tests", "- service: orders.v1.Orders\n  cluster: a", clustersA...)
	toB := routesYAML("tests", "- service: orders.v1.Orders\n  cluster: b",
		append(clustersA, yamlCluster{Name: "b", Endpoints: []string{b.addr}})...)
	v := startVigil(t, toA)
	conn := dialAuthority(t, v.listener("edge"), "")
	waitReady(t, conn)

	var calls, failures atomic.Int64
	var lastOrders atomic.Value
	lastOrders.Store("")
	var errMu sync.Mutex
	var firstErr error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tc := testpb.NewTestServiceClient(conn)
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				var err error
				if w%2 == 0 {
					var id string
					if id, err = ordersvc.Call(ctx, conn, "Get"); err == nil {
						lastOrders.Store(id)
					}
				} else {
					_, err = tc.UnaryCall(ctx, &testpb.SimpleRequest{})
				}
				cancel()
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
				}
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for round := range 3 {
		mark := v.mark()
		v.rewrite(toB)
		v.wait(20*time.Second, mark, match("config reloaded"), "the reload to b")
		eventually(t, 20*time.Second, func() bool { return lastOrders.Load() == "b" }, "orders.v1.Orders served by b (round %d)", round)
		mark = v.mark()
		v.rewrite(toA)
		v.wait(20*time.Second, mark, match("config reloaded"), "the reload to a")
		eventually(t, 20*time.Second, func() bool { return lastOrders.Load() == "a" }, "orders.v1.Orders served by a (round %d)", round)
	}
	if n := failures.Load(); n > 0 {
		errMu.Lock()
		defer errMu.Unlock()
		t.Fatalf("%d of %d RPCs failed across the reloads; first: %v", n, calls.Load(), firstErr)
	}
	t.Logf("%d RPCs across 6 reloads, none failed", calls.Load())
	if r := v.logs.find(0, match("routes wait for new clusters to be warm")); len(r) == 0 {
		t.Error("no reload waited for its new cluster to be warm")
	}
}
