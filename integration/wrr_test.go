package integration

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	v3orcapb "github.com/cncf/xds/go/xds/data/orca/v3"
	v3orcaservicepb "github.com/cncf/xds/go/xds/service/orca/v3"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/orca"
)

// withLoad makes the backend serve ORCA load reports of application
// utilization u at qps 100. stock: grpc-go's own service (orca.Register),
// which sends its first report at once and then at most every 30 s;
// otherwise a service that sends the recorder's metrics at the interval
// asked (as cmd/demo-backend does below 30 s), for tests of changes.
func withLoad(u float64, stock bool) backendOption {
	return func(c *backendConfig) {
		c.register = append(c.register, func(b *backend) {
			b.load = orca.NewServerMetricsRecorder()
			b.load.SetApplicationUtilization(u)
			b.load.SetQPS(100)
			if stock {
				if err := orca.Register(b.srv, orca.ServiceOptions{ServerMetricsProvider: b.load}); err != nil {
					panic(err)
				}
				return
			}
			v3orcaservicepb.RegisterOpenRcaServiceServer(b.srv, &intervalORCA{smr: b.load})
		})
	}
}

type intervalORCA struct {
	v3orcaservicepb.UnimplementedOpenRcaServiceServer
	smr orca.ServerMetricsProvider
}

func (o *intervalORCA) StreamCoreMetrics(req *v3orcaservicepb.OrcaLoadReportRequest, stream grpc.ServerStreamingServer[v3orcapb.OrcaLoadReport]) error {
	ticker := time.NewTicker(max(req.GetReportInterval().AsDuration(), 100*time.Millisecond))
	defer ticker.Stop()
	for {
		sm := o.smr.ServerMetrics()
		if err := stream.Send(&v3orcapb.OrcaLoadReport{ApplicationUtilization: sm.AppUtilization, RpsFractional: sm.QPS}); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-ticker.C:
		}
	}
}

// wrrCluster is a weighted_round_robin cluster over bs.
func wrrCluster(bs []*backend, loadReports string) yamlCluster {
	return yamlCluster{Name: "demo", Policy: "weighted_round_robin", Endpoints: addrs(bs), Extra: "load_reports:\n" + loadReports}
}

// effectiveWeights reads each backend's effective_weight from /clusters.
func effectiveWeights(t *testing.T, base string, bs []*backend) []float64 {
	t.Helper()
	doc := clusters(t, base)
	out := make([]float64, len(bs))
	for i, b := range bs {
		_, e := endpointOf(t, doc, "demo", b.addr)
		out[i], _ = e["effective_weight"].(float64)
	}
	return out
}

func near(got, want []float64, tolerance float64) bool {
	for i := range want {
		if math.Abs(got[i]-want[i]) > tolerance {
			return false
		}
	}
	return true
}

// shares makes n RPCs in a row through c and returns each backend's share.
func shares(t *testing.T, c *client, bs []*backend, n int) []float64 {
	t.Helper()
	count := map[string]int{}
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		id, err := c.call(ctx)
		cancel()
		if err != nil {
			t.Fatalf("RPC %d: %v", i, err)
		}
		count[id]++
	}
	out := make([]float64, len(bs))
	for i, b := range bs {
		out[i] = float64(count[b.id]) / float64(n)
	}
	return out
}

// wantShares checks a split against the shares of weights, within 10
// percentage points.
func wantShares(t *testing.T, what string, got, weights []float64) {
	t.Helper()
	sum := 0.0
	for _, w := range weights {
		sum += w
	}
	want := make([]float64, len(weights))
	for i, w := range weights {
		want[i] = w / sum
	}
	t.Logf("%s: shares %.3f, computed from the weights %.3f", what, got, want)
	if !near(got, want, 0.10) {
		t.Errorf("%s: shares %.3f, want %.3f within 10 percentage points", what, got, want)
	}
}

// TestWRRSplitByReports: three grpc-go backends serving ORCA with grpc-go's
// own service report utilizations 0.2, 0.5 and 0.8 at equal qps; the
// traffic follows qps/utilization (500, 200, 125).
func TestWRRSplitByReports(t *testing.T) {
	t.Parallel()
	bs := []*backend{
		startBackend(t, "b1", withLoad(0.2, true)),
		startBackend(t, "b2", withLoad(0.5, true)),
		startBackend(t, "b3", withLoad(0.8, true)),
	}
	// grpc-go's service reports at once, then every 30 s: no blackout,
	// so that the first report counts.
	v := startVigil(t, yamlConfig{
		Admin:     true,
		Listeners: []yamlListener{{Name: "api", Cluster: "demo"}},
		Clusters:  []yamlCluster{wrrCluster(bs, "  period: 30s\n  blackout: 0s")},
	}.String())
	base := "http://" + v.adminAddr()
	weights := []float64{500, 200, 125}
	eventually(t, 20*time.Second, func() bool { return near(effectiveWeights(t, base, bs), weights, 0.01) },
		"effective weights %v", weights)
	_, e := endpointOf(t, clusters(t, base), "demo", bs[0].addr)
	lr, _ := e["load_report"].(map[string]any)
	if lr["application_utilization"] != 0.2 || lr["qps"] != 100.0 || lr["weight"] != 500.0 {
		t.Errorf("b1's load_report %v, want application_utilization 0.2, qps 100, weight 500", lr)
	}
	c := dialClient(t, v.listener("api"))
	wantShares(t, "utilization 0.2, 0.5, 0.8", shares(t, c, bs, 1650), weights)
}

// TestWRRFollowsChange: a backend whose utilization rises loses traffic
// within blackout + period; a backend without ORCA gets the mean weight.
func TestWRRFollowsChange(t *testing.T) {
	t.Parallel()
	const period, blackout = 500 * time.Millisecond, time.Second
	bs := []*backend{
		startBackend(t, "b1", withLoad(0.5, false)),
		startBackend(t, "b2", withLoad(0.5, false)),
		startBackend(t, "b3", withLoad(0.5, false)),
	}
	cfg := yamlConfig{
		Admin:     true,
		Listeners: []yamlListener{{Name: "api", Cluster: "demo"}},
		Clusters:  []yamlCluster{wrrCluster(bs, fmt.Sprintf("  period: %v\n  blackout: %v\n  expiration: 10s", period, blackout))},
	}
	v := startVigil(t, cfg.String())
	base := "http://" + v.adminAddr()
	eventually(t, 20*time.Second, func() bool { return near(effectiveWeights(t, base, bs), []float64{200, 200, 200}, 0.01) },
		"weights of 200 each")

	changed := time.Now()
	bs[2].load.SetApplicationUtilization(2.0) // 100/2 = 50
	weights := []float64{200, 200, 50}
	// The next report (within period) reaches the next picker build
	// (within a second): the weight of an endpoint weighed already has
	// no blackout to wait. Slack for a loaded CI machine.
	eventually(t, blackout+period+5*time.Second, func() bool { return near(effectiveWeights(t, base, bs), weights, 0.01) },
		"weights %v after b3's utilization rose", weights)
	took := time.Since(changed)
	t.Logf("b3's utilization 0.5 -> 2.0: weights followed in %v (blackout + period = %v)", took.Round(time.Millisecond), blackout+period)
	c := dialClient(t, v.listener("api"))
	wantShares(t, "b3 loaded", shares(t, c, bs, 900), weights)
}

// TestWRRMeanForBackendWithoutORCA: a backend without the ORCA service
// gets the mean of the others' weights (logged once); the policy is
// switched by a reload, which keeps the endpoints and their connections.
func TestWRRMeanForBackendWithoutORCA(t *testing.T) {
	t.Parallel()
	bs := []*backend{
		startBackend(t, "b1", withLoad(0.25, false)), // 400
		startBackend(t, "b2", withLoad(0.5, false)),  // 200
		startBackend(t, "b3"),                        // none: the mean, 300
	}
	cfg := yamlConfig{
		Admin:     true,
		Listeners: []yamlListener{{Name: "api", Cluster: "demo"}},
		Clusters:  []yamlCluster{{Name: "demo", Endpoints: addrs(bs)}},
	}
	v := startVigil(t, cfg.String())
	for _, b := range bs {
		v.wait(15*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted "+b.id)
	}
	base := "http://" + v.adminAddr()
	c := dialClient(t, v.listener("api"))
	wantShares(t, "round_robin", shares(t, c, bs, 300), []float64{1, 1, 1})

	from := v.mark()
	cfg.Clusters = []yamlCluster{wrrCluster(bs, "  period: 200ms\n  blackout: 500ms\n  expiration: 10s")}
	v.rewrite(cfg.String())
	v.wait(10*time.Second, from, match("config reloaded"), "config reloaded")
	weights := []float64{400, 200, 300}
	eventually(t, 20*time.Second, func() bool { return near(effectiveWeights(t, base, bs), weights, 0.01) },
		"weights %v", weights)
	wantShares(t, "b3 by the mean", shares(t, c, bs, 900), weights)

	for _, r := range v.logs.find(from, func(r record) bool {
		return strings.HasPrefix(r.msg(), "endpoint added") || strings.HasPrefix(r.msg(), "endpoint removed") ||
			r.msg() == "endpoint admitted" || r.msg() == "endpoint readmitted"
	}) {
		t.Errorf("switching policy changed the membership: %v", r)
	}
	noORCA := v.logs.find(from, match("endpoint does not serve ORCA load reports, weighing it by the mean"))
	if len(noORCA) != 1 || noORCA[0].str("endpoint") != bs[2].addr {
		t.Errorf("records of b3 without ORCA: %v, want one", noORCA)
	}
	_, e := endpointOf(t, clusters(t, base), "demo", bs[2].addr)
	if e["load_report"] != nil {
		t.Errorf("b3's load_report %v, want null", e["load_report"])
	}

	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics answered %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, m := range families["vigil_endpoint_weight"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["cluster"] == "demo" {
			got[labels["endpoint"]] = m.GetGauge().GetValue()
		}
	}
	for i, b := range bs {
		if math.Abs(got[b.addr]-weights[i]) > 0.01 {
			t.Errorf("vigil_endpoint_weight{endpoint=%q} = %v, want %v", b.addr, got[b.addr], weights[i])
		}
	}
}
