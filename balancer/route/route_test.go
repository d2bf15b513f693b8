package route

import (
	"errors"
	"fmt"
	"testing"

	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/balancer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	orders   = balancer.NewCluster("orders")
	billing  = balancer.NewCluster("billing")
	charge   = balancer.NewCluster("billing-charge")
	admin    = balancer.NewCluster("admin")
	tenant   = balancer.NewCluster("tenant")
	fallback = balancer.NewCluster("fallback")
)

// table is the contract's example plus a wildcard and a combined route.
func table(def *balancer.Cluster) *Table {
	return New([]Route{
		{Name: "orders", Match: Match{Service: "orders.v1.Orders"}, Cluster: orders},
		{Match: Match{Service: "billing.v1.Billing", Method: "Charge"}, Cluster: charge},
		{Match: Match{Service: "billing.v1.Billing"}, Cluster: billing},
		{Match: Match{Authority: "admin.example.com"}, Cluster: admin},
		{Name: "tenant-orders", Match: Match{Service: "tenant.v1.Tenant", Authority: "*.tenants.example.com"}, Cluster: tenant},
	}, def)
}

func TestGRPC(t *testing.T) {
	for _, tc := range []struct {
		path, authority string
		def             *balancer.Cluster
		want            *balancer.Cluster // nil: no route
		label           string
	}{
		// service
		{"/orders.v1.Orders/Get", "vigil:8080", nil, orders, "orders"},
		{"/orders.v1.Orders/List", "", nil, orders, "orders"},
		{"/orders.v1.OrdersX/Get", "", nil, nil, ""},
		{"/orders.v1.orders/Get", "", nil, nil, ""}, // case-sensitive
		{"/orders.v1/Orders/Get", "", nil, nil, ""},
		// service + method, before the service's own route
		{"/billing.v1.Billing/Charge", "", nil, charge, "1"},
		{"/billing.v1.Billing/Refund", "", nil, billing, "2"},
		{"/billing.v1.Billing/ChargeX", "", nil, billing, "2"},
		// authority: port removed, case ignored; it also catches a service
		// no route names
		{"/other.Svc/M", "admin.example.com", nil, admin, "3"},
		{"/other.Svc/M", "ADMIN.Example.COM:443", nil, admin, "3"},
		{"/orders.v1.Orders/Get", "admin.example.com", nil, orders, "orders"}, // first match wins
		{"/other.Svc/M", "x.admin.example.com", nil, nil, ""},
		{"/other.Svc/M", "admin.example.com.evil", nil, nil, ""},
		// combined service and wildcard authority: one label only
		{"/tenant.v1.Tenant/Get", "a.tenants.example.com", nil, tenant, "tenant-orders"},
		{"/tenant.v1.Tenant/Get", "B.Tenants.Example.com:9", nil, tenant, "tenant-orders"},
		{"/tenant.v1.Tenant/Get", "tenants.example.com", nil, nil, ""},
		{"/tenant.v1.Tenant/Get", ".tenants.example.com", nil, nil, ""},
		{"/tenant.v1.Tenant/Get", "a.b.tenants.example.com", nil, nil, ""},
		{"/tenant.v1.Tenant/Get", "admin.example.com", nil, admin, "3"},
		{"/other.Svc/M", "a.tenants.example.com", nil, nil, ""},
		// default
		{"/other.Svc/M", "", fallback, fallback, ""},
		{"/orders.v1.Orders/Get", "", fallback, orders, "orders"},
		{"not-a-grpc-path", "admin.example.com", fallback, admin, "3"},
		{"not-a-grpc-path", "", fallback, fallback, ""},
		{"//M", "", fallback, fallback, ""},
		{"/orders.v1.Orders/", "", fallback, fallback, ""},
	} {
		name := fmt.Sprintf("%s@%s", tc.path, tc.authority)
		t.Run(name, func(t *testing.T) {
			e := table(tc.def).GRPC(tc.path, tc.authority)
			switch {
			case tc.want == nil && e != nil:
				t.Fatalf("routed to %s, want no route", e.Cluster.Name())
			case tc.want == nil:
			case e == nil:
				t.Fatalf("no route, want %s", tc.want.Name())
			case e.Cluster != tc.want || e.Label != tc.label:
				t.Fatalf("routed to %s (label %q), want %s (label %q)", e.Cluster.Name(), e.Label, tc.want.Name(), tc.label)
			}
		})
	}
}

func TestEmptyAndNil(t *testing.T) {
	var nilTable *Table
	if nilTable.GRPC("/a.B/C", "") != nil || nilTable.SNI("x") != nil || nilTable.Default() != nil || nilTable.Len() != 0 {
		t.Fatal("a nil table routes")
	}
	only := New(nil, fallback)
	if e := only.GRPC("/a.B/C", "x"); e == nil || e.Cluster != fallback || e.Index != -1 || e.Label != "" {
		t.Fatalf("default only: %+v", e)
	}
	if New(nil, nil).GRPC("/a.B/C", "") != nil {
		t.Fatal("an empty table without default routes")
	}
}

func TestSNI(t *testing.T) {
	tab := New([]Route{
		{Match: Match{SNI: "db-a.example.com"}, Cluster: orders},
		{Match: Match{SNI: "*.example.com"}, Cluster: billing},
	}, fallback)
	for _, tc := range []struct {
		sni  string
		want *balancer.Cluster
	}{
		{"db-a.example.com", orders}, {"DB-A.example.com", orders}, {"db-b.example.com", billing},
		{"example.com", fallback}, {"", fallback}, {"a.b.example.com", fallback},
	} {
		if e := tab.SNI(tc.sni); e == nil || e.Cluster != tc.want {
			t.Errorf("SNI(%q) = %v, want %s", tc.sni, e, tc.want.Name())
		}
	}
	// A tcp route never takes a gRPC call.
	if e := tab.GRPC("/a.B/C", "db-a.example.com"); e.Cluster != fallback {
		t.Errorf("a gRPC call took the sni route to %s", e.Cluster.Name())
	}
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		a, b Match
		want bool
	}{
		{Match{Service: "a.S"}, Match{Service: "a.S"}, true},
		{Match{Service: "a.S"}, Match{Service: "a.S", Method: "M"}, true},
		{Match{Service: "a.S", Method: "M"}, Match{Service: "a.S"}, false},
		{Match{Service: "a.S", Method: "M"}, Match{Service: "a.S", Method: "N"}, false},
		{Match{Service: "a.S"}, Match{Service: "a.T"}, false},
		{Match{Service: "a.S"}, Match{Service: "a.S", Authority: "x.com"}, true},
		{Match{Service: "a.S", Authority: "x.com"}, Match{Service: "a.S"}, false},
		{Match{Authority: "x.com"}, Match{Authority: "x.com", Service: "a.S"}, true},
		{Match{Authority: "*.x.com"}, Match{Authority: "a.x.com"}, true},
		{Match{Authority: "*.x.com"}, Match{Authority: "*.x.com", Service: "a.S"}, true},
		{Match{Authority: "a.x.com"}, Match{Authority: "*.x.com"}, false},
		{Match{Authority: "*.x.com"}, Match{Authority: "a.b.x.com"}, false},
		{Match{Authority: "*.x.com"}, Match{Authority: "*.b.x.com"}, false},
		{Match{SNI: "*.x.com"}, Match{SNI: "a.x.com"}, true},
		{Match{SNI: "a.x.com"}, Match{SNI: "b.x.com"}, false},
	} {
		if got := tc.a.Covers(tc.b); got != tc.want {
			t.Errorf("(%v).Covers(%v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestCheck(t *testing.T) {
	if !errors.Is(Match{}.Check(), ErrEmptyMatch) {
		t.Error("empty match accepted")
	}
	if !errors.Is(Match{Method: "M"}.Check(), ErrMethodNeedsService) {
		t.Error("method without service accepted")
	}
	if err := (Match{Service: "a.S", Method: "M"}).Check(); err != nil {
		t.Error(err)
	}
	for _, s := range []string{"orders.v1.Orders", "Svc", "a_b.C9"} {
		if err := CheckService(s); err != nil {
			t.Errorf("CheckService(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "/orders.v1.Orders", "orders..v1", "orders.v1.", "1a.B", "a-b.C", "a.B/C"} {
		if CheckService(s) == nil {
			t.Errorf("CheckService(%q) accepted", s)
		}
	}
	for _, s := range []string{"", "a/b", "a.b", "1a"} {
		if CheckMethod(s) == nil {
			t.Errorf("CheckMethod(%q) accepted", s)
		}
	}
	for in, want := range map[string]string{
		"Admin.Example.com": "admin.example.com", "*.Example.com": "*.example.com",
		"10.0.0.1": "10.0.0.1", "[::1]": "[::1]", "[0:0::1]": "[::1]", "localhost": "localhost",
	} {
		if got, err := CheckHost(in); err != nil || got != want {
			t.Errorf("CheckHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, s := range []string{"", "a.com:443", "*", "*.", "a.*.com", "*.*.com", "a..com", "-a.com", "*.10.0.0.1", "[::1]:80", "[10.0.0.1]", "::1", "a b"} {
		if got, err := CheckHost(s); err == nil {
			t.Errorf("CheckHost(%q) accepted as %q", s, got)
		}
	}
}

func TestHostOf(t *testing.T) {
	for in, want := range map[string]string{
		"a.com": "a.com", "a.com:443": "a.com", "[::1]:80": "[::1]", "[::1]": "[::1]", "": "", "10.0.0.1:9": "10.0.0.1",
	} {
		if got := HostOf(in); got != want {
			t.Errorf("HostOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// routes returns n service routes and the path of the last one.
func routes(n int) ([]Route, string) {
	rs := make([]Route, n)
	for i := range rs {
		rs[i] = Route{Match: Match{Service: fmt.Sprintf("svc%d.v1.Service", i)}, Cluster: orders}
	}
	return rs, fmt.Sprintf("/svc%d.v1.Service/Method", n-1)
}

func TestNoAllocations(t *testing.T) {
	rs, path := routes(100)
	rs = append(rs, Route{Match: Match{Authority: "*.example.com"}, Cluster: admin})
	tab := New(rs, fallback)
	for _, call := range [][2]string{{path, "x.example.com:443"}, {"/none.S/M", "x.example.com"}, {"/none.S/M", "other"}} {
		if n := testing.AllocsPerRun(100, func() { tab.GRPC(call[0], call[1]) }); n != 0 {
			t.Errorf("GRPC(%q, %q) allocates %v times", call[0], call[1], n)
		}
	}
}

// BenchmarkGRPC is the cost of routing one RPC with n service routes,
// matching the last route, and (authority) with the same routes behind one
// that checks :authority and does not match, so every route is tried.
func BenchmarkGRPC(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		rs, path := routes(n)
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			tab := New(rs, fallback)
			b.ReportAllocs()
			for b.Loop() {
				if tab.GRPC(path, "api.example.com:443") == nil {
					b.Fatal("no route")
				}
			}
		})
		b.Run(fmt.Sprintf("routes=%d/authority", n), func(b *testing.B) {
			// Every route matches on authority: a linear scan to the last.
			ars := make([]Route, n)
			for i := range ars {
				ars[i] = Route{Match: Match{Authority: fmt.Sprintf("host%d.example.com", i)}, Cluster: orders}
			}
			tab := New(ars, fallback)
			host := fmt.Sprintf("host%d.example.com:443", n-1)
			b.ReportAllocs()
			for b.Loop() {
				if tab.GRPC("/a.B/C", host) == nil {
					b.Fatal("no route")
				}
			}
		})
	}
	b.Run("routes=0", func(b *testing.B) {
		tab := New(nil, fallback)
		b.ReportAllocs()
		for b.Loop() {
			tab.GRPC("/a.B/C", "x")
		}
	})
}
