package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/peer"
)

// TestChaosReloadStorm writes the configuration file hundreds of times a
// second for a few seconds (renamed over, written in place, sometimes
// invalid), under load: vigil stays consistent (what runs afterwards is
// exactly the last file) and serving (no call fails), and its goroutines
// and heap come back to their baseline.
func TestChaosReloadStorm(t *testing.T) {
	t.Parallel()
	bs := []*chaosBackend{startChaosBackend(t, "b1"), startChaosBackend(t, "b2"), startChaosBackend(t, "b3"), startChaosBackend(t, "b4")}
	addrsOf := func(bs ...*chaosBackend) []string {
		out := make([]string, len(bs))
		for i, b := range bs {
			out[i] = b.addr
		}
		return out
	}
	cfg := yamlConfig{
		Admin: true,
		Listeners: []yamlListener{
			{Name: "api", Cluster: "demo"},
			{Name: "tcp", Protocol: "tcp", Cluster: "demo"},
		},
		Clusters: []yamlCluster{{Name: "demo", Endpoints: addrsOf(bs[:3]...), Health: chaosHealthCheck}},
	}
	v, admin := startChaosVigil(t, cfg)
	for _, b := range bs[:3] {
		v.wait(20*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted "+b.id)
	}
	load := newChaosLoad(t, loadSpec{grpcAddr: v.listener("api"), tcpAddr: v.listener("tcp"), unary: 4, streams: 2, tcp: 1}, 5*time.Second)
	// The variants the storm cycles through.
	variants := []func(yamlConfig) yamlConfig{
		func(c yamlConfig) yamlConfig { return c },
		func(c yamlConfig) yamlConfig { c.Clusters[0].Endpoints = addrsOf(bs...); return c },
		func(c yamlConfig) yamlConfig {
			c.Clusters[0].Endpoints = addrsOf(bs...)
			c.Clusters[0].Weights = []int{1, 2, 3, 4}
			return c
		},
		func(c yamlConfig) yamlConfig {
			c.Clusters[0].Policy = "least_request"
			c.Clusters[0].Endpoints = addrsOf(bs[1:]...)
			return c
		},
		func(c yamlConfig) yamlConfig { c.Clusters[0].Policy = "random"; return c },
	}
	render := func(i int) string {
		c := cfg
		c.Clusters = slices.Clone(cfg.Clusters)
		return variants[i%len(variants)](c).String()
	}
	// The last word after the storm: four endpoints with weights, policy
	// random.
	final := cfg
	final.Clusters = slices.Clone(cfg.Clusters)
	final.Clusters[0].Endpoints = addrsOf(bs...)
	final.Clusters[0].Weights = []int{4, 3, 2, 1}
	final.Clusters[0].Policy = "random"
	// Warm up with the storm's variants once, then take the baseline with
	// the final configuration: the same endpoints, the same connections.
	load.start()
	for i := 1; i < len(variants); i++ { // variant 0 is the file as it is
		from := v.mark()
		v.rewrite(render(i))
		v.wait(20*time.Second, from, match("config reloaded"), "warm-up reload")
	}
	from := v.mark()
	v.rewrite(final.String())
	v.wait(20*time.Second, from, match("config reloaded"), "the final configuration")
	for _, b := range bs {
		load.waitServed(t, 20*time.Second, b.id, load.served()[b.id])
	}
	load.pause()
	baseline := chaosBaseline(t, v, admin)

	load.start()
	start := v.mark()
	// As fast as the file system takes it: hundreds of writes a second
	// even on a busy machine.
	const stormFor = 3 * time.Second
	writes, inPlace, invalid := 0, 0, 0
	tmp := v.cfgPath + ".storm"
	stormStart := time.Now()
	for i := 0; time.Since(stormStart) < stormFor; i++ {
		content := render(i)
		switch {
		case i%7 == 3: // a broken file now and then
			content = badInterval.ReplaceAllString(content, "interval: soon")
			invalid++
		case i%11 == 5:
			content = strings.Replace(content, "lb_policy:", "lb_polcy:", 1)
			invalid++
		}
		if i%3 == 0 { // written in place: a reader may see it half written
			if err := os.WriteFile(v.cfgPath, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			inPlace++
		} else { // renamed over, as editors and Kubernetes do
			if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, v.cfgPath); err != nil {
				t.Fatal(err)
			}
		}
		writes++
	}
	stormTime := time.Since(stormStart)
	duringStorm := len(v.logs.find(start, func(r record) bool { return r.msg() == "config reloaded" || r.msg() == "config rejected" }))

	v.rewrite(final.String())
	eventually(t, 20*time.Second, func() bool {
		doc := clusters(t, admin)
		cl := doc["clusters"].([]any)
		if len(cl) != 1 {
			return false
		}
		c := cl[0].(map[string]any)
		eps := c["endpoints"].([]any)
		if c["lb_policy"] != "random" || len(eps) != 4 {
			return false
		}
		for i, b := range bs {
			_, e := endpointOf(t, doc, "demo", b.addr)
			if e["weight"] != float64(final.Clusters[0].Weights[i]) || e["health"] != "healthy" {
				return false
			}
		}
		return true
	}, "vigil runs exactly the last file written (4 endpoints with weights 4,3,2,1, random)")
	for _, b := range bs {
		load.waitServed(t, 20*time.Second, b.id, load.served()[b.id])
	}
	load.pause()
	reloaded := len(v.logs.find(start, match("config reloaded")))
	rejected := len(v.logs.find(start, match("config rejected")))
	t.Logf("reload storm: %d writes in %v (%.0f/s; %d in place, %d invalid); %d reloads and %d rejections logged, %d of them during the storm",
		writes, stormTime.Round(time.Millisecond), float64(writes)/stormTime.Seconds(), inPlace, invalid, reloaded, rejected, duringStorm)
	if duringStorm < 2 {
		t.Errorf("%d reloads during %v of writes: a steady stream of writes starves reloads", duringStorm, stormTime.Round(time.Millisecond))
	}
	load.verdict(func(chaosFailure) bool { return false }).requireNoUnexplained(t, "reload storm")
	chaosRequireBaseline(t, v, admin, baseline, "after the reload storm")
}

// badInterval finds health-check intervals, to make one invalid.
var badInterval = regexp.MustCompile(`interval: \S+`)

// chaosFleet is one gRPC server (health SERVING, TestService) listening on
// many addresses, counting the calls each address served.
type chaosFleet struct {
	addrs  []string
	mu     sync.Mutex
	served map[string]int
}

func startChaosFleet(t testing.TB, n int) *chaosFleet {
	t.Helper()
	f := &chaosFleet{served: map[string]int{}}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if p, ok := peer.FromContext(ctx); ok && p.LocalAddr != nil && info.FullMethod != healthpb.Health_Check_FullMethodName {
			f.mu.Lock()
			f.served[p.LocalAddr.String()]++
			f.mu.Unlock()
		}
		return handler(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	testgrpc.RegisterTestServiceServer(srv, interop.NewTestServer())
	var wg sync.WaitGroup
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			srv.Stop()
			wg.Wait()
			t.Fatal(err)
		}
		f.addrs = append(f.addrs, ln.Addr().String())
		wg.Go(func() { _ = srv.Serve(ln) })
	}
	t.Cleanup(func() {
		srv.Stop()
		wg.Wait()
	})
	return f
}

func (f *chaosFleet) servedBy(addr string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.served[addr]
}

// TestChaosEndpointChurn adds and removes 1,000 endpoints through 20
// reloads (50 in, 50 out each time) while traffic reaches every one of
// them: afterwards vigil's goroutines and heap are back to what they were
// with the same number of endpoints before the churn. A leak of one
// goroutine, one connection or a few KiB per endpoint would show a
// thousandfold.
func TestChaosEndpointChurn(t *testing.T) {
	t.Parallel()
	const batch, reloads = 50, 20
	fleet := startChaosFleet(t, batch*(reloads+1))
	fixed := []*chaosBackend{startChaosBackend(t, "b1"), startChaosBackend(t, "b2")}
	cfg := yamlConfig{
		Admin:     true,
		Listeners: []yamlListener{{Name: "api", Cluster: "demo"}},
		Clusters:  []yamlCluster{{Name: "demo", Health: "mode: check\ninterval: 500ms\ntimeout: 500ms\njitter: 10%\nunhealthy_threshold: 3\nhealthy_threshold: 1"}},
	}
	endpoints := func(i int) []string {
		return append([]string{fixed[0].addr, fixed[1].addr}, fleet.addrs[i*batch:(i+1)*batch]...)
	}
	cfg.Clusters[0].Endpoints = endpoints(0)
	v, admin := startChaosVigil(t, cfg)
	for _, b := range fixed {
		v.wait(20*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted "+b.id)
	}
	load := newChaosLoad(t, loadSpec{grpcAddr: v.listener("api"), unary: 6}, 5*time.Second)

	// Every endpoint of batch i admitted and served.
	admittedAndServed := func(i, from int) {
		t.Helper()
		for _, a := range fleet.addrs[i*batch : (i+1)*batch] {
			// Admitted, or (a first probe that timed out on a busy
			// machine) evicted while pending and then readmitted.
			v.wait(30*time.Second, from, func(r record) bool {
				return r.str("endpoint") == a && (r.msg() == "endpoint admitted" || r.msg() == "endpoint readmitted")
			}, "admitted "+a)
		}
		eventually(t, 30*time.Second, func() bool {
			for _, a := range fleet.addrs[i*batch : (i+1)*batch] {
				if fleet.servedBy(a) == 0 {
					return false
				}
			}
			return true
		}, "every endpoint of batch %d served calls", i)
	}
	load.start()
	admittedAndServed(0, 0)
	load.pause()
	baseline := chaosBaseline(t, v, admin)

	load.start()
	start := time.Now()
	for i := 1; i <= reloads; i++ {
		from := v.mark()
		cfg.Clusters[0].Endpoints = endpoints(i)
		v.rewrite(cfg.String())
		r, _ := v.wait(30*time.Second, from, func(r record) bool { return r.msg() == "config reloaded" || r.msg() == "config rejected" }, "reload")
		if r.msg() != "config reloaded" || r.num("endpoints_added") != batch || r.num("endpoints_removed") != batch {
			t.Fatalf("reload %d: %v", i, r)
		}
		admittedAndServed(i, from)
	}
	churn := time.Since(start)
	load.pause()
	// Every removed endpoint has drained: no fleet address but the last
	// batch's is in /clusters.
	eventually(t, 30*time.Second, func() bool {
		cl := clusters(t, admin)["clusters"].([]any)[0].(map[string]any)
		return len(cl["endpoints"].([]any)) == batch+2
	}, "the removed endpoints have drained")
	t.Logf("churn: %d endpoints added and %d removed in %d reloads in %v, every one admitted and served", batch*reloads, batch*reloads, reloads, churn.Round(time.Millisecond))
	load.verdict(func(chaosFailure) bool { return false }).requireNoUnexplained(t, "endpoint churn")
	chaosRequireBaseline(t, v, admin, baseline, fmt.Sprintf("after %d endpoint additions and removals", batch*reloads))
}
