package integration

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// threeBackends starts three backends and a vigil with a tcp listener "tcp"
// and a grpc listener "api" in front of them.
func threeBackends(t *testing.T, health string) ([]*backend, *vigilProc) {
	t.Helper()
	bs := []*backend{startBackend(t, "b1"), startBackend(t, "b2"), startBackend(t, "b3")}
	v := startVigil(t, yamlConfig{
		Listeners: []yamlListener{{Name: "tcp", Protocol: "tcp", Cluster: "demo"}, {Name: "api", Cluster: "demo"}},
		Clusters:  []yamlCluster{{Name: "demo", Panic: 0, Endpoints: addrs(bs), Health: health}},
	}.String())
	for _, b := range bs {
		v.wait(15*time.Second, 0, match("endpoint admitted", "cluster", "demo", "endpoint", b.addr), "admitted "+b.id)
	}
	return bs, v
}

func addrs(bs []*backend) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.addr
	}
	return out
}

func TestAdmitsThreeBackends(t *testing.T) {
	t.Parallel()
	bs, v := threeBackends(t, "")
	for _, b := range bs {
		r := v.logs.find(0, match("endpoint admitted", "endpoint", b.addr))[0]
		if r.str("level") != "INFO" || r.str("check") != "check" || r.str("cluster") != "demo" {
			t.Errorf("admitted record = %v", r)
		}
	}
	if n := len(v.logs.find(0, match("endpoint admitted"))); n != 3 {
		t.Errorf("%d admitted records; want exactly 3", n)
	}
	if rs := v.logs.find(0, match("cluster panic")); len(rs) > 0 {
		t.Errorf("a cluster whose endpoints are still pending was reported in panic: %v", rs)
	}
	loaded := v.logs.find(0, match("config loaded"))
	if len(loaded) != 1 || loaded[0].num("endpoints") != 3 || loaded[0].num("listeners") != 2 || loaded[0].num("clusters") != 1 {
		t.Errorf("config loaded records = %v", loaded)
	}
	if err := v.stop(10 * time.Second); err != nil {
		t.Errorf("vigil exited with %v after SIGTERM; want status 0", err)
	}
	if rs := v.logs.find(0, match("stopped")); len(rs) != 1 {
		t.Errorf("no clean stop in the log: %v", rs)
	}
}

func TestEvictsOnNotServingAndReadmits(t *testing.T) {
	t.Parallel()
	bs, v := threeBackends(t, "")
	from := v.mark()
	bs[1].serving(false)
	r, at := v.wait(10*time.Second, from, match("endpoint evicted", "endpoint", bs[1].addr), "evicted b2")
	want := map[string]string{"level": "WARN", "cluster": "demo", "check": "check", "reason": "NOT_SERVING",
		"failures": "1", "healthy": "2", "total": "3"}
	for k, val := range want {
		if r.str(k) != val {
			t.Errorf("evicted record %s = %q; want %q (record %v)", k, r.str(k), val, r)
		}
	}
	if r.str("hint") != "" {
		t.Errorf("NOT_SERVING eviction has a hint: %v", r)
	}

	bs[1].serving(true)
	r, _ = v.wait(10*time.Second, at, match("endpoint readmitted", "endpoint", bs[1].addr), "readmitted b2")
	if r.str("level") != "INFO" || r.str("healthy") != "3" || r.str("total") != "3" || r.str("check") != "check" {
		t.Errorf("readmitted record = %v", r)
	}
}

func TestDeadlineExceededOnlyAfterThreshold(t *testing.T) {
	t.Parallel()
	health := "mode: check\ninterval: 200ms\ntimeout: 100ms\njitter: 0%\nunhealthy_threshold: 3\nhealthy_threshold: 1"
	bs, v := threeBackends(t, health)
	from := v.mark()
	stalledFrom := bs[0].probes.Load()
	bs[0].stall.Store(true)
	r, _ := v.wait(10*time.Second, from, match("endpoint evicted", "endpoint", bs[0].addr), "evicted b1")
	if r.str("reason") != "DEADLINE_EXCEEDED" || r.num("failures") != 3 {
		t.Errorf("evicted record = %v; want reason DEADLINE_EXCEEDED after 3 failures", r)
	}
	// The record's failure count is vigil's; the backend may have seen
	// fewer of those probes: a probe that times out drops its connection,
	// and on a loaded machine the next one's dial and request can take its
	// whole 100 ms without reaching the backend.
	if stalled := bs[0].probes.Load() - stalledFrom; stalled < 1 {
		t.Errorf("evicted after %d stalled probes reached the backend; want at least 1", stalled)
	}
	if n := len(v.logs.find(from, match("endpoint evicted"))); n != 1 {
		t.Errorf("%d evictions; want 1", n)
	}
}

func TestUnimplementedHealthService(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"evict", "serve"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			b := startBackend(t, "bare", withoutHealth())
			health := "mode: check\ninterval: 100ms\ntimeout: 100ms\non_unimplemented: " + policy
			v := startVigil(t, yamlConfig{
				Listeners: []yamlListener{{Name: "tcp", Protocol: "tcp", Cluster: "demo"}},
				Clusters:  []yamlCluster{{Name: "demo", Endpoints: []string{b.addr}, Health: health}},
			}.String())
			if policy == "evict" {
				r, _ := v.wait(10*time.Second, 0, match("endpoint evicted", "endpoint", b.addr), "evicted")
				if r.str("reason") != "UNIMPLEMENTED" || r.num("failures") != 1 || !strings.Contains(r.str("hint"), "on_unimplemented") {
					t.Errorf("evicted record = %v", r)
				}
				return
			}
			v.wait(10*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted")
			warns := v.logs.find(0, func(r record) bool { return r.str("level") == "WARN" && r.str("endpoint") == b.addr })
			if len(warns) != 1 {
				t.Errorf("want exactly one warning for the endpoint served without a health service, got %v", warns)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if id, err := callOverNewConnection(ctx, v.listener("tcp")); err != nil || id != "bare" {
				t.Errorf("call through vigil = %q, %v", id, err)
			}
		})
	}
}

func TestUnregisteredServiceName(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b1")
	health := "mode: check\nservice: orders.v1.Orders\ninterval: 100ms\ntimeout: 100ms"
	v := startVigil(t, yamlConfig{
		Listeners: []yamlListener{{Name: "tcp", Protocol: "tcp", Cluster: "demo"}},
		Clusters:  []yamlCluster{{Name: "demo", Endpoints: []string{b.addr}, Health: health}},
	}.String())
	r, _ := v.wait(10*time.Second, 0, match("endpoint evicted", "endpoint", b.addr), "evicted")
	if r.str("reason") != "NOT_FOUND" || r.num("failures") != 1 || r.str("hint") == "" {
		t.Errorf("evicted record = %v; want reason NOT_FOUND with a hint", r)
	}
	// Registering the name readmits it: names match exactly.
	from := v.mark()
	b.setStatus("orders.v1.Orders", healthpb.HealthCheckResponse_SERVING)
	v.wait(10*time.Second, from, match("endpoint readmitted", "endpoint", b.addr), "readmitted")
}

func TestBackendKilledWithSIGKILL(t *testing.T) {
	t.Parallel()
	d1 := startDemoBackend(t, "d1")
	d2 := startDemoBackend(t, "d2")
	v := startVigil(t, yamlConfig{
		Listeners: []yamlListener{{Name: "tcp", Protocol: "tcp", Cluster: "demo"}},
		Clusters:  []yamlCluster{{Name: "demo", Endpoints: []string{d1.addr, d2.addr}}},
	}.String())
	for _, d := range []*demoBackend{d1, d2} {
		v.wait(15*time.Second, 0, match("endpoint admitted", "endpoint", d.addr), "admitted "+d.addr)
	}
	from := v.mark()
	d1.kill()
	r, _ := v.wait(10*time.Second, from, match("endpoint evicted", "endpoint", d1.addr), "evicted d1")
	if r.str("reason") != "UNAVAILABLE" || r.num("failures") != 2 || r.str("healthy") != "1" {
		t.Errorf("evicted record = %v; want UNAVAILABLE after 2 failures", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 10 {
		if id, err := callOverNewConnection(ctx, v.listener("tcp")); err != nil || id != "d2" {
			t.Fatalf("call after the kill = %q, %v; want d2", id, err)
		}
	}
}

func TestTCPSpreadsConnectionsOverHealthyOnly(t *testing.T) {
	t.Parallel()
	bs, v := threeBackends(t, "")
	addr := v.listener("tcp")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	calls := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			id, err := callOverNewConnection(ctx, addr)
			if err != nil {
				t.Fatalf("call through the tcp listener: %v", err)
			}
			got[id]++
		}
		return got
	}
	got := calls(30)
	for _, b := range bs {
		if got[b.id] < 7 || got[b.id] > 13 {
			t.Errorf("round robin over 30 connections gave %v; want about 10 each", got)
			break
		}
	}

	from := v.mark()
	bs[2].serving(false)
	v.wait(10*time.Second, from, match("endpoint evicted", "endpoint", bs[2].addr), "evicted b3")
	before := bs[2].hits.Load()
	got = calls(30)
	if got["b3"] != 0 || bs[2].hits.Load() != before {
		t.Errorf("connections after the eviction went to the evicted backend: %v", got)
	}
	if got["b1"] < 10 || got["b2"] < 10 {
		t.Errorf("connections after the eviction: %v; want them spread over b1 and b2", got)
	}
}

func TestNoHealthyEndpoint(t *testing.T) {
	t.Parallel()
	bs, v := threeBackends(t, "")
	from := v.mark()
	for _, b := range bs {
		b.serving(false)
	}
	v.wait(10*time.Second, from, func(r record) bool { return r.msg() == "endpoint evicted" && r.str("healthy") == "0" },
		"last eviction")

	// TCP: the connection is closed at once.
	conn, err := net.DialTimeout("tcp", v.listener("tcp"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("read on a tcp connection with no healthy upstream = %d, %v; want it closed", n, err)
	}

	// gRPC: UNAVAILABLE, saying why.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = dialClient(t, v.listener("api")).call(ctx)
	if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != "no healthy upstream in cluster demo" {
		t.Errorf("call with no healthy upstream = %v", err)
	}
}

func TestPanicRoutesOnlyToTransportFailures(t *testing.T) {
	t.Parallel()
	health := "mode: check\ninterval: 100ms\ntimeout: 50ms\nunhealthy_threshold: 2\nhealthy_threshold: 1"
	bs := []*backend{startBackend(t, "b1"), startBackend(t, "b2"), startBackend(t, "b3")}
	v := startVigil(t, yamlConfig{
		Listeners: []yamlListener{{Name: "tcp", Protocol: "tcp", Cluster: "demo"}},
		Clusters:  []yamlCluster{{Name: "demo", Panic: 50, Endpoints: addrs(bs), Health: health}},
	}.String())
	for _, b := range bs {
		v.wait(15*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted "+b.id)
	}
	from := v.mark()
	bs[0].stall.Store(true) // its probes time out: maybe the probes are what is broken
	bs[1].serving(false)    // it asked to be drained
	bs[2].stall.Store(true)
	r, _ := v.wait(10*time.Second, from, match("cluster panic", "cluster", "demo"), "cluster panic")
	if r.str("level") != "WARN" {
		t.Errorf("panic record = %v", r)
	}
	v.wait(10*time.Second, from, func(r record) bool { return r.msg() == "endpoint evicted" && r.str("healthy") == "0" },
		"all evicted")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := map[string]int{}
	for range 20 {
		id, err := callOverNewConnection(ctx, v.listener("tcp"))
		if err != nil {
			t.Fatalf("call in panic mode: %v", err)
		}
		got[id]++
	}
	if got["b2"] != 0 || got["b1"] == 0 || got["b3"] == 0 {
		t.Errorf("panic traffic went to %v; want b1 and b3 only, never b2 (it answered NOT_SERVING)", got)
	}

	from = v.mark()
	bs[0].stall.Store(false)
	bs[2].stall.Store(false)
	v.wait(10*time.Second, from, match("cluster recovered", "cluster", "demo"), "cluster recovered")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestWatchModePushesEvictionAndReadmission: in watch mode a backend's
// NOT_SERVING evicts it, and its SERVING readmits it, as pushed, long
// before the 30 s interval or two Checks could have; and a quiet stream
// costs the backend no Check at all (liveness: keepalive).
func TestWatchModePushesEvictionAndReadmission(t *testing.T) {
	t.Parallel()
	bs, v := threeBackends(t, "mode: watch\ninterval: 30s\ntimeout: 1s\nhealthy_threshold: 2")
	from := v.mark()
	bs[1].serving(false)
	r, at := v.wait(10*time.Second, from, match("endpoint evicted", "endpoint", bs[1].addr), "evicted b2")
	if r.str("check") != "watch" || r.str("reason") != "NOT_SERVING" || r.num("failures") != 1 {
		t.Errorf("evicted record = %v; want check watch, reason NOT_SERVING, 1 failure", r)
	}
	bs[1].serving(true)
	r, _ = v.wait(10*time.Second, at, match("endpoint readmitted", "endpoint", bs[1].addr), "readmitted b2")
	if r.str("check") != "watch" || r.str("healthy") != "3" {
		t.Errorf("readmitted record = %v", r)
	}
	for _, b := range bs {
		if n := b.probes.Load(); n != 0 {
			t.Errorf("%s got %d Checks; a watched backend with liveness keepalive gets none", b.id, n)
		}
	}
}
