package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// reloadFixture is vigil in front of three of four backends (the fourth is
// spare, for adding), with a steady mixed load running.
type reloadFixture struct {
	bs   []*backend
	cfg  yamlConfig
	v    *vigilProc
	load *load
}

func newReloadFixture(t *testing.T) *reloadFixture {
	t.Helper()
	f := &reloadFixture{bs: []*backend{
		startBackend(t, "b1"), startBackend(t, "b2"), startBackend(t, "b3"), startBackend(t, "b4"),
	}}
	f.cfg = yamlConfig{
		ShutdownTimeout: "2s",
		Listeners: []yamlListener{
			{Name: "api", Protocol: "grpc", Cluster: "demo"},
			{Name: "tcp", Protocol: "tcp", Cluster: "demo"},
		},
		Clusters: []yamlCluster{{Name: "demo", Endpoints: addrs(f.bs[:3])}},
	}
	f.v = startVigil(t, f.cfg.String())
	for _, b := range f.bs[:3] {
		f.v.wait(15*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted "+b.id)
	}
	f.load = startLoad(t, loadSpec{grpcAddr: f.v.listener("api"), tcpAddr: f.v.listener("tcp"), unary: 2, streams: 1, tcp: 1})
	eventually(t, 10*time.Second, func() bool { return f.load.ok.Load() > 50 }, "load running")
	return f
}

// reload writes the changed configuration and waits for vigil to apply it.
func (f *reloadFixture) reload(t *testing.T) record {
	t.Helper()
	from := f.v.mark()
	f.v.rewrite(f.cfg.String())
	r, _ := f.v.wait(10*time.Second, from, func(r record) bool {
		return r.msg() == "config reloaded" || r.msg() == "config rejected"
	}, "config reloaded")
	if r.msg() != "config reloaded" {
		t.Fatalf("reload rejected: %v", r)
	}
	return r
}

// settle lets the load run a while longer after a change.
func (f *reloadFixture) settle() { time.Sleep(500 * time.Millisecond) }

func TestReloadAddsEndpoint(t *testing.T) {
	t.Parallel()
	f := newReloadFixture(t)
	from := f.v.mark()
	f.cfg.Clusters[0].Endpoints = addrs(f.bs)
	r := f.reload(t)
	if r.num("endpoints_added") != 1 || r.num("endpoints_removed") != 0 {
		t.Errorf("reloaded record = %v", r)
	}
	f.v.wait(5*time.Second, from, match("endpoint added", "cluster", "demo", "endpoint", f.bs[3].addr), "endpoint added")
	f.v.wait(5*time.Second, from, match("endpoint admitted", "endpoint", f.bs[3].addr), "b4 admitted")
	eventually(t, 2*time.Second, func() bool { return f.load.served()["b4"] > 0 }, "b4 receives traffic within 2s")
	if n := len(f.v.logs.find(from, match("endpoint evicted"))); n != 0 {
		t.Errorf("the reload evicted %d endpoints", n)
	}
	f.settle()
	f.load.requireClean(t)
}

func TestReloadRemovesEndpointAndDrainsIt(t *testing.T) {
	t.Parallel()
	f := newReloadFixture(t)

	// A long-lived TCP connection pinned to b3: it must keep working while
	// b3 drains, and be cut only when the drain timeout (2s) expires.
	var pinned *client
	for range 30 {
		c := dialClient(t, f.v.listener("tcp"))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		id, err := c.call(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if id == "b3" {
			pinned = c
			break
		}
		_ = c.conn.Close()
	}
	if pinned == nil {
		t.Fatal("no tcp connection landed on b3")
	}

	from := f.v.mark()
	f.cfg.Clusters[0].Endpoints = addrs(f.bs[:2])
	r := f.reload(t)
	if r.num("endpoints_removed") != 1 {
		t.Errorf("reloaded record = %v", r)
	}
	removedAt := time.Now()
	f.v.wait(5*time.Second, from, match("endpoint removed", "cluster", "demo", "endpoint", f.bs[2].addr), "endpoint removed")
	// Calls that picked b3 before the removal may still be finishing.
	time.Sleep(100 * time.Millisecond)
	hits := f.bs[2].hits.Load()

	// The pinned connection still works while draining...
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if id, err := pinned.call(ctx); err != nil || id != "b3" {
		t.Errorf("call on a draining connection = %q, %v", id, err)
	}
	// ...and nothing new reaches b3 but that connection's calls.
	f.settle()
	if got := f.bs[2].hits.Load() - hits; got != 1 {
		t.Errorf("b3 served %d calls after its removal; want only the pinned connection's one", got)
	}
	if got := f.load.served()["b3"]; got > 0 {
		before := got
		f.settle()
		if after := f.load.served()["b3"]; after != before {
			t.Errorf("the load still reaches b3 after its removal: %d then %d", before, after)
		}
	}
	// The drain timeout cuts the pinned connection.
	eventually(t, 5*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		id, err := pinned.call(ctx)
		return err != nil || id != "b3"
	}, "the pinned connection to b3 is cut after the drain timeout")
	if since := time.Since(removedAt); since < 1500*time.Millisecond {
		t.Errorf("the draining connection was cut after %v; the drain timeout is 2s", since)
	}
	f.load.requireClean(t)
}

func TestReloadChangesHealthCheckKeepingHealth(t *testing.T) {
	t.Parallel()
	f := newReloadFixture(t)
	for _, b := range f.bs {
		b.setStatus("orders", healthpb.HealthCheckResponse_SERVING)
	}
	from := f.v.mark()
	f.cfg.Clusters[0].Health = "mode: check\nservice: orders\ninterval: 150ms\ntimeout: 100ms\nunhealthy_threshold: 3\nhealthy_threshold: 1"
	r := f.reload(t)
	if r.num("clusters_changed") != 1 {
		t.Errorf("reloaded record = %v", r)
	}
	f.settle()
	if rs := f.v.logs.find(from, func(r record) bool {
		return r.msg() == "endpoint admitted" || r.msg() == "endpoint evicted"
	}); len(rs) > 0 {
		t.Errorf("health changed across a health_check reload: %v", rs)
	}
	// The new service name is what is checked now.
	from = f.v.mark()
	f.bs[0].setStatus("orders", healthpb.HealthCheckResponse_NOT_SERVING)
	r, _ = f.v.wait(5*time.Second, from, match("endpoint evicted", "endpoint", f.bs[0].addr), "b1 evicted on service orders")
	if r.str("reason") != "NOT_SERVING" {
		t.Errorf("evicted record = %v", r)
	}
	f.settle()
	f.load.requireClean(t)
}

func TestReloadChangesPolicy(t *testing.T) {
	t.Parallel()
	f := newReloadFixture(t)
	f.cfg.Clusters[0].Policy = "least_request"
	if r := f.reload(t); r.num("clusters_changed") != 1 {
		t.Errorf("reloaded record = %v", r)
	}
	f.settle()
	f.cfg.Clusters[0].Policy = "random"
	f.cfg.Clusters[0].Weights = []int{1, 2, 3}
	if r := f.reload(t); r.num("weights_changed") != 2 {
		t.Errorf("reloaded record = %v", r)
	}
	f.settle()
	f.load.requireClean(t)
}

func TestReloadAddsAndRemovesListener(t *testing.T) {
	t.Parallel()
	f := newReloadFixture(t)
	from := f.v.mark()
	f.cfg.Listeners = append(f.cfg.Listeners, yamlListener{Name: "api2", Protocol: "grpc", Cluster: "demo"})
	if r := f.reload(t); r.num("listeners_added") != 1 {
		t.Errorf("reloaded record = %v", r)
	}
	r, _ := f.v.wait(5*time.Second, from, match("listening", "listener", "api2"), "api2 listening")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := dialClient(t, r.str("address")).call(ctx); err != nil {
		t.Errorf("call through the new listener: %v", err)
	}

	from = f.v.mark()
	f.cfg.Listeners = f.cfg.Listeners[:2]
	if r := f.reload(t); r.num("listeners_removed") != 1 {
		t.Errorf("reloaded record = %v", r)
	}
	f.v.wait(5*time.Second, from, match("listener removed", "listener", "api2"), "api2 removed")
	f.settle()
	f.load.requireClean(t)
}

func TestReloadThroughConfigMapSymlinkSwap(t *testing.T) {
	t.Parallel()
	bs := []*backend{startBackend(t, "b1"), startBackend(t, "b2")}
	cfg := yamlConfig{
		Listeners: []yamlListener{{Name: "api", Cluster: "demo"}},
		Clusters:  []yamlCluster{{Name: "demo", Endpoints: addrs(bs[:1])}},
	}
	// What the kubelet builds: config.yaml -> ..data/config.yaml,
	// ..data -> ..v1; an update repoints ..data atomically.
	dir := t.TempDir()
	writeVersion := func(version string, cfg yamlConfig) {
		if err := os.Mkdir(filepath.Join(dir, version), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, version, "config.yaml"), []byte(cfg.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeVersion("..v1", cfg)
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/config.yaml", filepath.Join(dir, "config.yaml")); err != nil {
		t.Fatal(err)
	}
	v := startVigilFile(t, filepath.Join(dir, "config.yaml"))
	v.wait(15*time.Second, 0, match("endpoint admitted", "endpoint", bs[0].addr), "b1 admitted")
	ld := startLoad(t, loadSpec{grpcAddr: v.listener("api"), unary: 2, streams: 1})

	from := v.mark()
	cfg.Clusters[0].Endpoints = addrs(bs)
	writeVersion("..v2", cfg)
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "..v1")); err != nil {
		t.Fatal(err)
	}
	r, _ := v.wait(10*time.Second, from, match("config reloaded"), "reload after the symlink swap")
	if r.num("endpoints_added") != 1 {
		t.Errorf("reloaded record = %v", r)
	}
	v.wait(5*time.Second, from, match("endpoint admitted", "endpoint", bs[1].addr), "b2 admitted")
	eventually(t, 2*time.Second, func() bool { return ld.served()["b2"] > 0 }, "b2 receives traffic")
	time.Sleep(500 * time.Millisecond)
	ld.requireClean(t)
}

func TestReloadOnSIGHUP(t *testing.T) {
	t.Parallel()
	f := newReloadFixture(t)
	from := f.v.mark()
	f.v.signal(syscall.SIGHUP)
	r, _ := f.v.wait(10*time.Second, from, match("config reloaded"), "reload on SIGHUP")
	if r.str("unchanged") != "true" {
		t.Errorf("reloaded record = %v; want unchanged=true", r)
	}
	f.settle()
	f.load.requireClean(t)
}

func TestReloadRejectsInvalidFileAndKeepsServing(t *testing.T) {
	t.Parallel()
	f := newReloadFixture(t)
	from := f.v.mark()
	bad := strings.Replace(f.cfg.String(), "interval: 100ms", "interval: soon\n      intervall: 1s", 1)
	f.v.rewrite(bad)
	r, _ := f.v.wait(10*time.Second, from, match("config rejected"), "config rejected")
	errs, _ := r["errors"].([]any)
	if r.str("level") != "ERROR" || len(errs) != 2 {
		t.Fatalf("rejected record = %v; want 2 errors", r)
	}
	for _, e := range errs {
		if s, _ := e.(string); !strings.HasPrefix(s, f.v.cfgPath+":") || strings.Count(s, ":") < 4 {
			t.Errorf("error %q is not FILE:LINE:COL: path: message", s)
		}
	}
	f.settle()
	served := f.load.served()
	for _, b := range f.bs[:3] {
		if served[b.id] == 0 {
			t.Errorf("%s no longer served after the rejected reload: %v", b.id, served)
		}
	}
	// A good file is taken again afterwards.
	f.cfg.Clusters[0].Endpoints = addrs(f.bs)
	f.reload(t)
	f.load.requireClean(t)
}
