package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-proxy/vigil/internal/dnstest"
)

// sharedPortBackends starts n backends on 127.0.0.first, 127.0.0.first+1,
// ..., all on one port, as the addresses of one DNS name are.
func sharedPortBackends(t *testing.T, n, first int) ([]*backend, int) {
	t.Helper()
	for range 20 {
		probe, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", first))
		if err != nil {
			t.Fatal(err)
		}
		port := probe.Addr().(*net.TCPAddr).Port
		probe.Close()
		if !portFree(first, n, port) {
			continue
		}
		bs := make([]*backend, n)
		for i := range n {
			ip := fmt.Sprintf("127.0.0.%d", first+i)
			bs[i] = startBackend(t, ip, at(net.JoinHostPort(ip, strconv.Itoa(port))))
		}
		return bs, port
	}
	t.Fatal("no port free on all the addresses")
	return nil, 0
}

func portFree(first, n, port int) bool {
	for i := range n {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:%d", first+i, port))
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}

func (b *backend) ip() string {
	host, _, _ := net.SplitHostPort(b.addr)
	return host
}

// dnsCluster is a cluster discovering name:port at the test's unbound.
func dnsCluster(name, discovery string) yamlCluster {
	return yamlCluster{
		Name:      name,
		Discovery: discovery,
		Health:    "mode: watch\ninterval: 1s\ntimeout: 500ms\nunhealthy_threshold: 2\nhealthy_threshold: 1",
	}
}

func discoveryVigil(t *testing.T, clusters ...yamlCluster) *vigilProc {
	t.Helper()
	var listeners []yamlListener
	for _, c := range clusters {
		listeners = append(listeners, yamlListener{Name: c.Name, Cluster: c.Name})
	}
	return startVigil(t, yamlConfig{Admin: true, Listeners: listeners, Clusters: clusters}.String())
}

// adminBase is vigil's admin server's base URL.
func (v *vigilProc) adminBase() string { return "http://" + v.adminAddr() }

// TestDiscoveryDNS: addresses added and removed under load with no failed
// call; each addition and removal logged with source=dns and shown in
// /clusters.
func TestDiscoveryDNS(t *testing.T) {
	t.Parallel()
	dnstest.Require(t)
	bs, port := sharedPortBackends(t, 3, 2)
	srv := dnstest.Start(t, dnstest.A("orders", 30, bs[0].ip()), dnstest.A("orders", 30, bs[1].ip()))
	v := discoveryVigil(t, dnsCluster("orders", fmt.Sprintf("dns: %s:%d\nrefresh: 200ms\nresolver: %s", dnstest.Name("orders"), port, srv.Addr)))
	for _, b := range bs[:2] {
		v.wait(10*time.Second, 0, match("endpoint added", "cluster", "orders", "endpoint", b.addr, "source", "dns"), "endpoint added "+b.addr)
		v.wait(10*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted "+b.addr)
	}
	load := startLoad(t, loadSpec{grpcAddr: v.listener("orders"), unary: 4, streams: 2})

	mark := v.mark()
	srv.Set(dnstest.A("orders", 30, bs[0].ip()), dnstest.A("orders", 30, bs[1].ip()), dnstest.A("orders", 30, bs[2].ip()))
	v.wait(10*time.Second, mark, match("endpoint added", "endpoint", bs[2].addr, "source", "dns"), "endpoint added "+bs[2].addr)
	eventually(t, 10*time.Second, func() bool { return bs[2].hits.Load() > 0 }, "no call reached the added endpoint")

	mark = v.mark()
	srv.Set(dnstest.A("orders", 30, bs[1].ip()), dnstest.A("orders", 30, bs[2].ip()))
	v.wait(10*time.Second, mark, match("endpoint removed", "endpoint", bs[0].addr, "source", "dns"), "endpoint removed "+bs[0].addr)
	time.Sleep(500 * time.Millisecond) // traffic on the new set
	before := bs[0].hits.Load()
	time.Sleep(500 * time.Millisecond)
	if after := bs[0].hits.Load(); after != before {
		t.Errorf("the removed endpoint still got %d calls", after-before)
	}
	load.requireClean(t)

	doc := clusters(t, v.adminBase())
	for _, b := range bs[1:] {
		if _, e := endpointOf(t, doc, "orders", b.addr); e["source"] != "dns" {
			t.Errorf("/clusters: %s has source %v, want dns", b.addr, e["source"])
		}
	}
	// Nothing changed since: no more records, whatever the refreshes.
	mark = v.mark()
	time.Sleep(time.Second)
	if rs := v.logs.find(mark, func(r record) bool {
		return strings.HasPrefix(r.msg(), "endpoint ") || strings.HasPrefix(r.msg(), "discovery ")
	}); len(rs) > 0 {
		t.Errorf("records while nothing changed: %v", rs)
	}
}

// TestDiscoveryDNSFailures: the server stopped keeps the last set, logged
// once as `discovery failed` and once as `discovery recovered`; NXDOMAIN
// empties the cluster.
func TestDiscoveryDNSFailures(t *testing.T) {
	t.Parallel()
	dnstest.Require(t)
	bs, port := sharedPortBackends(t, 2, 10)
	records := []string{dnstest.A("orders", 30, bs[0].ip()), dnstest.A("orders", 30, bs[1].ip())}
	srv := dnstest.Start(t, records...)
	v := discoveryVigil(t, dnsCluster("orders", fmt.Sprintf("dns: %s:%d\nrefresh: 100ms\nresolver: %s", dnstest.Name("orders"), port, srv.Addr)))
	for _, b := range bs {
		v.wait(10*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted "+b.addr)
	}
	load := startLoad(t, loadSpec{grpcAddr: v.listener("orders"), unary: 2})

	mark := v.mark()
	srv.Stop()
	failed, _ := v.wait(10*time.Second, mark, match("discovery failed", "cluster", "orders", "source", "dns"), "discovery failed")
	if failed["level"] != "WARN" || failed.str("error") == "" {
		t.Errorf("discovery failed: %v", failed)
	}
	time.Sleep(time.Second) // ten more failed refreshes
	if n := len(v.logs.find(mark, match("discovery failed"))); n != 1 {
		t.Errorf("%d discovery failed records in one failure streak, want 1", n)
	}
	if rs := v.logs.find(mark, match("endpoint removed")); len(rs) > 0 {
		t.Errorf("a failed lookup removed endpoints: %v", rs)
	}
	srv.Restart()
	v.wait(10*time.Second, mark, match("discovery recovered", "cluster", "orders", "source", "dns"), "discovery recovered")
	load.requireClean(t)

	// NXDOMAIN: the name is gone, and so are the endpoints.
	mark = v.mark()
	srv.Set()
	for _, b := range bs {
		v.wait(10*time.Second, mark, match("endpoint removed", "endpoint", b.addr, "source", "dns"), "endpoint removed "+b.addr)
	}
	c := dialClient(t, v.listener("orders"))
	eventually(t, 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.call(ctx)
		st, _ := status.FromError(err)
		return st.Code() == codes.Unavailable && strings.Contains(st.Message(), "no healthy upstream in cluster orders")
	}, "calls do not fail with no healthy upstream")
}

// TestDiscoverySRV: every SRV target:port is an endpoint with its record's
// weight, and traffic follows the weights.
func TestDiscoverySRV(t *testing.T) {
	t.Parallel()
	dnstest.Require(t)
	light := startBackend(t, "light")
	heavy := startBackend(t, "heavy")
	_, lightPort, _ := net.SplitHostPort(light.addr)
	_, heavyPort, _ := net.SplitHostPort(heavy.addr)
	lp, _ := strconv.Atoi(lightPort)
	hp, _ := strconv.Atoi(heavyPort)
	srv := dnstest.Start(t,
		dnstest.SRV("_grpc._tcp.orders", 30, 0, 1, lp, dnstest.Name("host")),
		dnstest.SRV("_grpc._tcp.orders", 30, 0, 3, hp, dnstest.Name("host")),
		dnstest.A("host", 30, "127.0.0.1"),
	)
	v := discoveryVigil(t, dnsCluster("orders", fmt.Sprintf("srv: %s\nresolver: %s", dnstest.Name("_grpc._tcp.orders"), srv.Addr)))
	for _, b := range []*backend{light, heavy} {
		v.wait(10*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted "+b.addr)
	}
	doc := clusters(t, v.adminBase())
	for _, want := range []struct {
		b      *backend
		weight float64
	}{{light, 1}, {heavy, 3}} {
		if _, e := endpointOf(t, doc, "orders", want.b.addr); e["weight"] != want.weight || e["source"] != "srv" {
			t.Errorf("/clusters: %s: weight %v source %v, want %v srv", want.b.addr, e["weight"], e["source"], want.weight)
		}
	}
	c := dialClient(t, v.listener("orders"))
	for range 400 {
		if _, err := c.call(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ratio := float64(heavy.hits.Load()) / float64(light.hits.Load())
	t.Logf("calls: heavy %d, light %d", heavy.hits.Load(), light.hits.Load())
	if ratio < 2.5 || ratio > 3.5 {
		t.Errorf("heavy/light = %.2f, want about 3", ratio)
	}
}

// TestDiscoveryDNSTTL: a record's TTL shorter than refresh re-resolves at
// the TTL.
func TestDiscoveryDNSTTL(t *testing.T) {
	t.Parallel()
	dnstest.Require(t)
	bs, port := sharedPortBackends(t, 2, 20)
	srv := dnstest.Start(t, dnstest.A("orders", 1, bs[0].ip()))
	v := discoveryVigil(t, dnsCluster("orders", fmt.Sprintf("dns: %s:%d\nrefresh: 1m\nresolver: %s", dnstest.Name("orders"), port, srv.Addr)))
	v.wait(10*time.Second, 0, match("endpoint added", "endpoint", bs[0].addr), "endpoint added")
	mark := v.mark()
	start := time.Now()
	srv.Set(dnstest.A("orders", 1, bs[0].ip()), dnstest.A("orders", 1, bs[1].ip()))
	// Well before the minute of refresh: the TTL of 1 s rules.
	v.wait(10*time.Second, mark, match("endpoint added", "endpoint", bs[1].addr), "endpoint added at the TTL")
	t.Logf("change seen after %v (TTL 1s, refresh 1m)", time.Since(start).Round(time.Millisecond))
}

// TestDiscoveryDNSThousandAddresses: one name with 1,000 addresses, each a
// listener of the test's own (tcp health checks), all admitted.
func TestDiscoveryDNSThousandAddresses(t *testing.T) {
	t.Parallel()
	dnstest.Require(t)
	const n = 1000
	var records []string
	port := 0
	for try := 0; port == 0 && try < 20; try++ {
		probe, err := net.Listen("tcp", "127.2.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = probe.Addr().(*net.TCPAddr).Port
		probe.Close()
		var ls []net.Listener
		for i := range n {
			l, err := net.Listen("tcp", net.JoinHostPort(fmt.Sprintf("127.2.%d.%d", i/250, i%250+1), strconv.Itoa(port)))
			if errors.Is(err, syscall.EADDRINUSE) {
				for _, l := range ls {
					l.Close()
				}
				ls, port = nil, 0
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			t.Cleanup(func() { l.Close() })
			go func() { // accept and close: a tcp health check is a connect
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
		}
	}
	for i := range n {
		records = append(records, dnstest.A("big", 30, fmt.Sprintf("127.2.%d.%d", i/250, i%250+1)))
	}
	srv := dnstest.Start(t, records...)
	c := dnsCluster("big", fmt.Sprintf("dns: %s:%d\nresolver: %s", dnstest.Name("big"), port, srv.Addr))
	// Lenient checks: on a loaded machine (and under -race) a connect may
	// take long, and the point is the 1,000 endpoints.
	c.Health = "mode: tcp\ninterval: 2s\ntimeout: 5s\nhealthy_threshold: 1"
	v := discoveryVigil(t, c)
	eventually(t, 90*time.Second, func() bool {
		doc := clusters(t, v.adminBase())
		cl := doc["clusters"].([]any)[0].(map[string]any)
		return cl["healthy"] == float64(n) && cl["total"] == float64(n)
	}, "1,000 endpoints not all admitted")
}

// TestDiscoveryReload: a reload that changes one cluster's discovery
// restarts that cluster's discovery only; an endpoint in both the old and
// the new answer keeps its health (no removal, no new admission).
func TestDiscoveryReload(t *testing.T) {
	t.Parallel()
	dnstest.Require(t)
	bs, port := sharedPortBackends(t, 3, 30)
	srv := dnstest.Start(t,
		dnstest.A("a", 30, bs[0].ip()), dnstest.A("a", 30, bs[1].ip()),
		dnstest.A("a2", 30, bs[1].ip()), dnstest.A("a2", 30, bs[2].ip()),
		dnstest.A("b", 30, bs[2].ip()),
	)
	disc := func(name string) string {
		return fmt.Sprintf("dns: %s:%d\nrefresh: 200ms\nresolver: %s", dnstest.Name(name), port, srv.Addr)
	}
	cfg := yamlConfig{Admin: true,
		Listeners: []yamlListener{{Name: "a", Cluster: "a"}, {Name: "b", Cluster: "b"}},
		Clusters:  []yamlCluster{dnsCluster("a", disc("a")), dnsCluster("b", disc("b"))},
	}
	v := startVigil(t, cfg.String())
	for _, ep := range []struct{ cluster, addr string }{{"a", bs[0].addr}, {"a", bs[1].addr}, {"b", bs[2].addr}} {
		v.wait(10*time.Second, 0, match("endpoint admitted", "cluster", ep.cluster, "endpoint", ep.addr), "admitted "+ep.addr)
	}
	_, kept := endpointOf(t, clusters(t, v.adminBase()), "a", bs[1].addr)

	mark := v.mark()
	cfg.Clusters[0].Discovery = disc("a2")
	v.rewrite(cfg.String())
	v.wait(10*time.Second, mark, match("config reloaded"), "config reloaded")
	v.wait(10*time.Second, mark, match("endpoint added", "cluster", "a", "endpoint", bs[2].addr, "source", "dns"), "a gains "+bs[2].addr)
	v.wait(10*time.Second, mark, match("endpoint removed", "cluster", "a", "endpoint", bs[0].addr, "source", "dns"), "a loses "+bs[0].addr)
	if rs := v.logs.find(mark, match("discovery started", "cluster", "b")); len(rs) > 0 {
		t.Errorf("cluster b's discovery restarted: %v", rs)
	}
	if rs := v.logs.find(mark, match("discovery started", "cluster", "a")); len(rs) != 1 {
		t.Errorf("cluster a's discovery: %d starts, want 1", len(rs))
	}
	if rs := v.logs.find(mark, func(r record) bool { return r.str("endpoint") == bs[1].addr && r.str("cluster") == "a" }); len(rs) > 0 {
		t.Errorf("the endpoint in both answers was touched: %v", rs)
	}
	if _, e := endpointOf(t, clusters(t, v.adminBase()), "a", bs[1].addr); e["since"] != kept["since"] || e["health"] != "healthy" {
		t.Errorf("the endpoint in both answers: %v, was %v", e, kept)
	}

	// Another source finding the same endpoint: it changes source, and
	// keeps its health.
	_, keptB := endpointOf(t, clusters(t, v.adminBase()), "b", bs[2].addr)
	mark = v.mark()
	cfg.Clusters[1].Discovery = fmt.Sprintf("srv: %s\nrefresh: 200ms\nresolver: %s", dnstest.Name("_grpc._tcp.b"), srv.Addr)
	srv.Set(
		dnstest.A("a", 30, bs[0].ip()), dnstest.A("a", 30, bs[1].ip()),
		dnstest.A("a2", 30, bs[1].ip()), dnstest.A("a2", 30, bs[2].ip()),
		dnstest.A("b", 30, bs[2].ip()), dnstest.SRV("_grpc._tcp.b", 30, 0, 1, port, dnstest.Name("b")),
	)
	v.rewrite(cfg.String())
	v.wait(10*time.Second, mark, match("config reloaded"), "config reloaded")
	eventually(t, 10*time.Second, func() bool {
		_, e := endpointOf(t, clusters(t, v.adminBase()), "b", bs[2].addr)
		return e["source"] == "srv"
	}, "b's endpoint does not come from srv")
	if rs := v.logs.find(mark, match("endpoint removed", "cluster", "b")); len(rs) > 0 {
		t.Errorf("changing the source removed an endpoint it finds too: %v", rs)
	}
	if _, e := endpointOf(t, clusters(t, v.adminBase()), "b", bs[2].addr); e["since"] != keptB["since"] || e["health"] != "healthy" {
		t.Errorf("the endpoint both sources find: %v, was %v", e, keptB)
	}
}
