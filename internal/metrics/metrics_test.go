package metrics

import (
	"bytes"
	"errors"
	"maps"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/balancer/tcpproxy"
	"github.com/vigil-proxy/vigil/balancer/tlsterm"
	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/state"
	"github.com/vigil-proxy/vigil/internal/tlsconf"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scrape gathers g, renders the families in the text exposition format and
// parses them back with the Prometheus text parser: what a Prometheus
// server would read from /metrics.
func scrape(t testing.TB, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatalf("encode %s: %v", mf.GetName(), err)
		}
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(&buf)
	if err != nil {
		t.Fatalf("parse exposition: %v\n%s", err, buf.String())
	}
	return fams
}

// sample returns the value of the series of family name with exactly the
// labels given (name=value pairs); ok is false when there is none. For a
// histogram it returns the sample count.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	mf := fams[name]
	if mf == nil {
		return 0, false
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		if !maps.Equal(got, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// series counts the series of a family that carry label=value.
func series(fams map[string]*dto.MetricFamily, name, label, value string) int {
	n := 0
	for _, m := range fams[name].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label && lp.GetValue() == value {
				n++
			}
		}
	}
	return n
}

func mustSample(t *testing.T, fams map[string]*dto.MetricFamily, want float64, name string, labels ...string) {
	t.Helper()
	got, ok := sample(fams, name, labels...)
	if !ok {
		t.Fatalf("no series %s%v; family: %v", name, labels, fams[name])
	}
	if got != want {
		t.Fatalf("%s%v = %v; want %v", name, labels, got, want)
	}
}

func mustNotHave(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) {
	t.Helper()
	if v, ok := sample(fams, name, labels...); ok {
		t.Fatalf("series %s%v still exported (value %v)", name, labels, v)
	}
}

// testStore is a store with clusters of endpoints and listeners.
type testStore struct {
	t testing.TB
	*state.Store
}

func newTestStore(t testing.TB) *testStore {
	t.Helper()
	s, err := state.New()
	if err != nil {
		t.Fatal(err)
	}
	return &testStore{t: t, Store: s}
}

func (s *testStore) addCluster(name string, addrs ...string) {
	s.t.Helper()
	err := s.Update(func(w state.Writer) error {
		if err := w.UpsertCluster(&state.Cluster{Name: name, PanicThreshold: 50}); err != nil {
			return err
		}
		for _, a := range addrs {
			e := &state.Endpoint{Cluster: name, Address: a, Weight: 1, Check: checker.ModeCheck,
				Status: checker.Status{Health: checker.Pending, Since: time.Now()}}
			if err := w.UpsertEndpoint(e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.t.Fatal(err)
	}
}

func (s *testStore) removeCluster(name string) {
	s.t.Helper()
	if err := s.Update(func(w state.Writer) error { return w.DeleteClusterByName(name) }); err != nil {
		s.t.Fatal(err)
	}
}

func (s *testStore) removeEndpoint(cluster, addr string) {
	s.t.Helper()
	if err := s.Update(func(w state.Writer) error { return w.DeleteEndpointByAddress(cluster, addr) }); err != nil {
		s.t.Fatal(err)
	}
}

func (s *testStore) addListener(name string, proto config.Protocol, cluster string) {
	s.t.Helper()
	err := s.Update(func(w state.Writer) error {
		return w.UpsertListener(&state.Listener{
			Listener: config.Listener{Name: name, Address: "127.0.0.1:0", Protocol: proto, Cluster: cluster},
			Bound:    "127.0.0.1:1",
		})
	})
	if err != nil {
		s.t.Fatal(err)
	}
}

func (s *testStore) removeListener(name string) {
	s.t.Helper()
	if err := s.Update(func(w state.Writer) error { return w.DeleteListenerByName(name) }); err != nil {
		s.t.Fatal(err)
	}
}

func (s *testStore) setHealth(cluster, addr string, h checker.Health, reason string) {
	s.t.Helper()
	st := checker.Status{Health: h, Reason: reason, Since: time.Now()}
	if h == checker.Unhealthy {
		st.Failures = 3
		st.Cause = checker.CauseTransport
	}
	s.Handle([]event.Event{{Kind: event.EndpointUpdated, Cluster: cluster, Address: addr, Weight: 1, Check: checker.ModeCheck, Status: st}})
}

// handleChange hands m the event a pool makes of ch.
func handleChange(m *Metrics, ch checker.Change) {
	kind := map[checker.Transition]event.Kind{
		checker.NoTransition: event.EndpointUpdated, checker.Admitted: event.EndpointAdmitted,
		checker.Evicted: event.EndpointEvicted, checker.Readmitted: event.EndpointReadmitted,
	}[ch.Transition]
	m.Handle([]event.Event{{Kind: kind, Cluster: ch.Cluster, Address: ch.Address, Status: ch.New}})
}

// built tells m that cluster's new picker has routable endpoints.
func built(m *Metrics, cluster string, routable int) {
	m.Handle([]event.Event{{Kind: event.PickerBuilt, Cluster: cluster, Routable: routable}})
}

func ok(latency time.Duration) checker.Result { return checker.Result{OK: true, Latency: latency} }

func fail(reason string, cause checker.Cause, latency time.Duration) checker.Result {
	return checker.Result{Reason: reason, Cause: cause, Latency: latency}
}

// exercise calls every hook once, so that every family has a series.
func exercise(m *Metrics, s *testStore) {
	s.addCluster("orders", "127.0.0.1:1", "127.0.0.1:2")
	s.addListener("api", config.ProtocolGRPC, "orders")
	s.addListener("raw", config.ProtocolTCP, "orders")
	s.setHealth("orders", "127.0.0.1:1", checker.Healthy, "")
	m.Probe("orders", "127.0.0.1:1", ok(time.Millisecond))
	m.Probe("orders", "127.0.0.1:2", fail("NOT_SERVING", checker.CauseAnswer, time.Millisecond))
	handleChange(m, checker.Change{Cluster: "orders", Address: "127.0.0.1:1", Transition: checker.Admitted})
	handleChange(m, checker.Change{Cluster: "orders", Address: "127.0.0.1:2", Transition: checker.Evicted,
		New: checker.Status{Health: checker.Unhealthy, Reason: "NOT_SERVING"}})
	handleChange(m, checker.Change{Cluster: "orders", Address: "127.0.0.1:2", Transition: checker.Readmitted})
	m.Handle([]event.Event{{Kind: event.EndpointEvicted, Cluster: "orders", Address: "127.0.0.1:1", Outlier: true,
		Status:   checker.Status{Health: checker.Unhealthy, Reason: "UNAVAILABLE", Cause: checker.CauseTransport},
		Ejection: event.Ejection{Since: time.Now(), Until: time.Now().Add(time.Second), Count: 1, Reason: "UNAVAILABLE"}}})
	built(m, "orders", 0)
	m.Reload(false)
	g := m.GRPC("api")
	g.ConnOpened()
	g.RPCStarted("orders", "127.0.0.1:1")
	g.RPCFinished("orders", "", "127.0.0.1:1", "OK", time.Millisecond)
	g.RPCRetried("orders", "127.0.0.1:2")
	g.RPCReplayed("orders", "127.0.0.1:2", "goaway")
	tc := m.TCP("raw")
	tc.ConnectionOpened("orders", "127.0.0.1:1")
	tc.ConnectionClosed(tcpproxy.ConnStats{Cluster: "orders", Endpoint: "127.0.0.1:1", Outcome: tcpproxy.OutcomeOK})
	m.TLSCertificates("api", []tlsconf.Cert{{File: "/etc/vigil/tls.crt", NotAfter: time.Now().Add(time.Hour)}})
	m.TLSHandshake("api")(tlsterm.ResultOK, nil)
	m.DiscoveryStarted("orders", "dns")
	m.DiscoveryUpdate("orders", "dns", DiscoveryChanged, 2)
	m.AccessLogDropped("api")()
}

// The access log's drops are exported per listener while its log is on,
// or once some were counted.
func TestAccessLogDropped(t *testing.T) {
	s := newTestStore(t)
	m := New(Options{Store: s.Store})
	s.addListener("api", config.ProtocolGRPC, "orders")
	m.GRPC("api")
	if _, ok := scrape(t, m)["vigil_access_log_dropped_total"]; ok {
		t.Fatal("dropped exported for a listener without access log or drops")
	}
	drop := m.AccessLogDropped("api")
	drop()
	drop()
	f, ok := scrape(t, m)["vigil_access_log_dropped_total"]
	if !ok || len(f.Metric) != 1 || f.Metric[0].GetCounter().GetValue() != 2 || f.Metric[0].Label[0].GetValue() != "api" {
		t.Fatalf("vigil_access_log_dropped_total = %v", f)
	}
}

func TestNamesListEveryFamily(t *testing.T) {
	s := newTestStore(t)
	m := New(Options{Store: s.Store, Version: "v1.2.3"})
	exercise(m, s)
	fams := scrape(t, m)
	var got []string
	for name := range fams {
		if strings.HasPrefix(name, "vigil_") {
			got = append(got, name)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, Names()) {
		t.Fatalf("families gathered:\n%v\nNames():\n%v", got, Names())
	}
	if !slices.IsSorted(Names()) {
		t.Fatal("Names() is not sorted")
	}
	for _, prefix := range []string{"go_", "process_"} {
		if !slices.ContainsFunc(slices.Collect(maps.Keys(fams)), func(n string) bool { return strings.HasPrefix(n, prefix) }) {
			t.Errorf("no %s* family: the Go and process collectors are missing", prefix)
		}
	}
	mustSample(t, fams, 1, "vigil_build_info", "version", "v1.2.3", "goversion", runtime.Version())
}

// TestContractFamilies checks the names, types and label names that
// DESIGN.md's admin API section promises.
func TestContractFamilies(t *testing.T) {
	s := newTestStore(t)
	m := New(Options{Store: s.Store})
	exercise(m, s)
	fams := scrape(t, m)
	for _, tc := range []struct {
		name   string
		typ    dto.MetricType
		labels []string
	}{
		{"vigil_endpoint_healthy", dto.MetricType_GAUGE, []string{"cluster", "endpoint"}},
		{"vigil_health_checks_total", dto.MetricType_COUNTER, []string{"cluster", "result"}},
		{"vigil_evictions_total", dto.MetricType_COUNTER, []string{"cluster", "reason"}},
		{"vigil_readmissions_total", dto.MetricType_COUNTER, []string{"cluster"}},
		{"vigil_upstream_rq_total", dto.MetricType_COUNTER, []string{"cluster", "route", "code"}},
		{"vigil_config_reloads_total", dto.MetricType_COUNTER, []string{"result"}},
		{"vigil_tls_handshakes_total", dto.MetricType_COUNTER, []string{"listener", "result"}},
		// DESIGN.md's {listener,file}, and cluster for the client
		// certificates of clusters (empty on a listener's series, which
		// PromQL treats as absent).
		{"vigil_tls_certificate_expiry_seconds", dto.MetricType_GAUGE, []string{"listener", "cluster", "file"}},
		{"vigil_discovery_updates_total", dto.MetricType_COUNTER, []string{"cluster", "source", "result"}},
		{"vigil_discovery_endpoints", dto.MetricType_GAUGE, []string{"cluster", "source"}},
	} {
		mf := fams[tc.name]
		if mf == nil {
			t.Errorf("%s: missing", tc.name)
			continue
		}
		if mf.GetType() != tc.typ {
			t.Errorf("%s: type %v; want %v", tc.name, mf.GetType(), tc.typ)
		}
		for _, series := range mf.GetMetric() {
			var names []string
			for _, lp := range series.GetLabel() {
				names = append(names, lp.GetName())
			}
			slices.Sort(names)
			want := slices.Sorted(slices.Values(tc.labels))
			if !slices.Equal(names, want) {
				t.Errorf("%s: labels %v; want %v", tc.name, names, want)
			}
		}
	}
}

func TestLint(t *testing.T) {
	s := newTestStore(t)
	m := New(Options{Store: s.Store})
	exercise(m, s)
	mfs, err := m.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var ours []*dto.MetricFamily
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "vigil_") {
			ours = append(ours, mf)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(ours).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestProbeResults(t *testing.T) {
	for _, tc := range []struct {
		name     string
		results  []checker.Result
		success  float64
		failure  float64
		reasons  map[string]float64
		timedOK  float64
		timedBad float64
	}{
		{
			name:    "successes are counted and timed",
			results: []checker.Result{ok(time.Millisecond), ok(2 * time.Millisecond)},
			success: 2, timedOK: 2,
		},
		{
			name: "failures by reason",
			results: []checker.Result{
				fail("NOT_SERVING", checker.CauseAnswer, time.Millisecond),
				fail("DEADLINE_EXCEEDED", checker.CauseTransport, time.Second),
				fail("DEADLINE_EXCEEDED", checker.CauseTransport, time.Second),
			},
			failure: 3, timedBad: 3,
			reasons: map[string]float64{"NOT_SERVING": 1, "DEADLINE_EXCEEDED": 2},
		},
		{
			name: "pushed statuses count but are not timed",
			results: []checker.Result{
				{OK: true, Pushed: true},
				{Reason: "SERVICE_UNKNOWN", Cause: checker.CauseAnswer, Pushed: true},
			},
			success: 1, failure: 1,
			reasons: map[string]float64{"SERVICE_UNKNOWN": 1},
		},
		{
			name:    "unknown reasons are bounded",
			results: []checker.Result{fail("some error text: 127.0.0.1:1", checker.CauseTransport, time.Millisecond)},
			failure: 1, timedBad: 1,
			reasons: map[string]float64{"OTHER": 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestStore(t)
			s.addCluster("orders", "127.0.0.1:1")
			m := New(Options{Store: s.Store})
			for _, r := range tc.results {
				m.Probe("orders", "127.0.0.1:1", r)
			}
			fams := scrape(t, m)
			check := func(want float64, name string, labels ...string) {
				t.Helper()
				got, _ := sample(fams, name, labels...)
				if got != want {
					t.Errorf("%s%v = %v; want %v", name, labels, got, want)
				}
			}
			check(tc.success, "vigil_health_checks_total", "cluster", "orders", "result", "success")
			check(tc.failure, "vigil_health_checks_total", "cluster", "orders", "result", "failure")
			check(tc.timedOK, "vigil_health_check_duration_seconds", "cluster", "orders", "result", "success")
			check(tc.timedBad, "vigil_health_check_duration_seconds", "cluster", "orders", "result", "failure")
			if n := len(fams["vigil_health_check_failures_total"].GetMetric()); n != len(tc.reasons) {
				t.Errorf("%d failure reasons exported; want %d", n, len(tc.reasons))
			}
			for reason, want := range tc.reasons {
				check(want, "vigil_health_check_failures_total", "cluster", "orders", "reason", reason)
			}
		})
	}
}

func TestEndpointStatsFromProbes(t *testing.T) {
	m := New(Options{})
	if _, found := m.Endpoint("orders", "127.0.0.1:1"); found {
		t.Fatal("stats for an endpoint never seen")
	}
	before := time.Now()
	m.Probe("orders", "127.0.0.1:1", ok(3*time.Millisecond))
	st, found := m.Endpoint("orders", "127.0.0.1:1")
	if !found || st.LastLatency != 3*time.Millisecond || st.LastProbe.Before(before) || st.Inflight != 0 {
		t.Fatalf("after a probe: %+v, %v", st, found)
	}
	// A pushed status moves the time and has no latency.
	m.Probe("orders", "127.0.0.1:1", checker.Result{OK: true, Pushed: true})
	if st2, _ := m.Endpoint("orders", "127.0.0.1:1"); st2.LastLatency != 0 || st2.LastProbe.Before(st.LastProbe) {
		t.Fatalf("after a pushed status: %+v", st2)
	}
	g, tc := m.GRPC("api"), m.TCP("raw")
	g.RPCStarted("orders", "127.0.0.1:1")
	tc.ConnectionOpened("orders", "127.0.0.1:1")
	if st, _ := m.Endpoint("orders", "127.0.0.1:1"); st.Inflight != 2 {
		t.Fatalf("inflight with one RPC and one connection = %d", st.Inflight)
	}
	g.RPCFinished("orders", "", "127.0.0.1:1", "OK", time.Millisecond)
	tc.ConnectionClosed(tcpproxy.ConnStats{Cluster: "orders", Endpoint: "127.0.0.1:1", Outcome: tcpproxy.OutcomeOK})
	if st, _ := m.Endpoint("orders", "127.0.0.1:1"); st.Inflight != 0 {
		t.Fatalf("inflight after both ended = %d", st.Inflight)
	}
}

func TestTransitions(t *testing.T) {
	s := newTestStore(t)
	s.addCluster("orders", "127.0.0.1:1")
	m := New(Options{Store: s.Store})
	evict := func(reason string) checker.Change {
		return checker.Change{Cluster: "orders", Address: "127.0.0.1:1", Transition: checker.Evicted,
			New: checker.Status{Health: checker.Unhealthy, Reason: reason}}
	}
	for _, ch := range []checker.Change{
		{Cluster: "orders", Address: "127.0.0.1:1", Transition: checker.Admitted},
		evict("NOT_SERVING"),
		{Cluster: "orders", Address: "127.0.0.1:1", Transition: checker.Readmitted},
		evict("UNAVAILABLE"),
		{Cluster: "orders", Address: "127.0.0.1:1", Transition: checker.Readmitted},
		evict("UNAVAILABLE"),
		{Cluster: "orders", Address: "127.0.0.1:1", Transition: checker.NoTransition},
		evict("garbage"),
	} {
		handleChange(m, ch)
	}
	fams := scrape(t, m)
	mustSample(t, fams, 1, "vigil_admissions_total", "cluster", "orders")
	mustSample(t, fams, 2, "vigil_readmissions_total", "cluster", "orders")
	mustSample(t, fams, 1, "vigil_evictions_total", "cluster", "orders", "reason", "NOT_SERVING")
	mustSample(t, fams, 2, "vigil_evictions_total", "cluster", "orders", "reason", "UNAVAILABLE")
	mustSample(t, fams, 1, "vigil_evictions_total", "cluster", "orders", "reason", "OTHER")
}

func TestHealthFollowsTheStore(t *testing.T) {
	s := newTestStore(t)
	s.addCluster("orders", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
	m := New(Options{Store: s.Store})

	fams := scrape(t, m)
	for _, a := range []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"} {
		mustSample(t, fams, 0, "vigil_endpoint_healthy", "cluster", "orders", "endpoint", a)
	}
	mustSample(t, fams, 3, "vigil_cluster_endpoints", "cluster", "orders", "health", "pending")

	s.setHealth("orders", "127.0.0.1:1", checker.Healthy, "")
	s.setHealth("orders", "127.0.0.1:2", checker.Unhealthy, "UNAVAILABLE")
	s.Handle([]event.Event{{Kind: event.ClusterPanic, Cluster: "orders", Panic: true}})
	built(m, "orders", 2)
	fams = scrape(t, m)
	mustSample(t, fams, 1, "vigil_endpoint_healthy", "cluster", "orders", "endpoint", "127.0.0.1:1")
	mustSample(t, fams, 0, "vigil_endpoint_healthy", "cluster", "orders", "endpoint", "127.0.0.1:2")
	mustSample(t, fams, 3, "vigil_endpoint_consecutive_failures", "cluster", "orders", "endpoint", "127.0.0.1:2")
	for health, want := range map[string]float64{"pending": 1, "healthy": 1, "unhealthy": 1, "draining": 0} {
		mustSample(t, fams, want, "vigil_cluster_endpoints", "cluster", "orders", "health", health)
	}
	mustSample(t, fams, 1, "vigil_cluster_panic", "cluster", "orders")
	mustSample(t, fams, 2, "vigil_cluster_routable_endpoints", "cluster", "orders")
}

func TestRemovedClustersAndEndpointsAreDropped(t *testing.T) {
	s := newTestStore(t)
	s.addCluster("orders", "127.0.0.1:1", "127.0.0.1:2")
	s.addCluster("billing", "127.0.0.1:3")
	m := New(Options{Store: s.Store})
	for _, c := range []string{"orders", "billing"} {
		m.Probe(c, "127.0.0.1:1", ok(time.Millisecond))
		handleChange(m, checker.Change{Cluster: c, Transition: checker.Evicted, New: checker.Status{Reason: "NOT_SERVING"}})
		m.GRPC("api").RPCFinished(c, "", "", "UNAVAILABLE", time.Millisecond)
	}
	fams := scrape(t, m)
	mustSample(t, fams, 1, "vigil_health_checks_total", "cluster", "billing", "result", "success")

	s.removeCluster("billing")
	s.removeEndpoint("orders", "127.0.0.1:2")
	fams = scrape(t, m)
	for _, name := range []string{"vigil_health_checks_total", "vigil_health_check_duration_seconds",
		"vigil_evictions_total", "vigil_upstream_rq_total", "vigil_upstream_rq_duration_seconds",
		"vigil_cluster_endpoints", "vigil_cluster_panic", "vigil_endpoint_healthy"} {
		if n := series(fams, name, "cluster", "billing"); n != 0 {
			t.Errorf("%s: %d series of the removed cluster left", name, n)
		}
		if name != "vigil_endpoint_healthy" && series(fams, name, "cluster", "orders") == 0 {
			t.Errorf("%s: the remaining cluster lost its series", name)
		}
	}
	mustNotHave(t, fams, "vigil_endpoint_healthy", "cluster", "orders", "endpoint", "127.0.0.1:2")
	mustSample(t, fams, 0, "vigil_endpoint_healthy", "cluster", "orders", "endpoint", "127.0.0.1:1")
	if _, found := m.Endpoint("orders", "127.0.0.1:2"); found {
		t.Error("state of a removed endpoint kept")
	}

	// A late probe result of the removed cluster is counted nowhere for
	// long: the next scrape drops it again.
	m.Probe("billing", "127.0.0.1:3", ok(time.Millisecond))
	if n := series(scrape(t, m), "vigil_health_checks_total", "cluster", "billing"); n != 0 {
		t.Errorf("a late probe brought back %d series of a removed cluster", n)
	}

	// A cluster added back starts counting again from zero.
	s.addCluster("billing", "127.0.0.1:3")
	m.Probe("billing", "127.0.0.1:3", ok(time.Millisecond))
	m.Probe("billing", "127.0.0.1:3", ok(time.Millisecond))
	fams = scrape(t, m)
	mustSample(t, fams, 2, "vigil_health_checks_total", "cluster", "billing", "result", "success")
}

func TestStaleClusterSeriesAreNotRecreated(t *testing.T) {
	s := newTestStore(t)
	s.addCluster("orders", "127.0.0.1:1")
	m := New(Options{Store: s.Store})
	// A hook holding the cluster's series from before it was removed
	// must not create children that no later prune would find.
	cs := m.cluster("orders")
	s.removeCluster("orders")
	scrape(t, m)
	cs.rq.codes[codeIndex("OK")].get(m, cs).Inc()
	cs.failure(m, "NOT_SERVING").Inc()
	cs.rq.duration.get(m, cs).Observe(1)
	fams := scrape(t, m)
	for _, name := range []string{"vigil_upstream_rq_total", "vigil_health_check_failures_total", "vigil_upstream_rq_duration_seconds"} {
		if n := series(fams, name, "cluster", "orders"); n != 0 {
			t.Errorf("%s: a stale hook created %d series", name, n)
		}
	}
}

func TestUpstreamRequests(t *testing.T) {
	s := newTestStore(t)
	s.addCluster("orders", "127.0.0.1:1")
	s.addListener("api", config.ProtocolGRPC, "orders")
	m := New(Options{Store: s.Store})
	g := m.GRPC("api")
	g.ConnOpened()
	g.ConnOpened()
	g.ConnRejected()
	g.RPCStarted("orders", "127.0.0.1:1")
	g.RPCStarted("orders", "127.0.0.1:1")

	fams := scrape(t, m)
	mustSample(t, fams, 2, "vigil_listener_active_connections", "listener", "api")
	mustSample(t, fams, 2, "vigil_listener_connections_total", "listener", "api")
	mustSample(t, fams, 1, "vigil_listener_connections_rejected_total", "listener", "api")
	mustSample(t, fams, 2, "vigil_listener_active_streams", "listener", "api")
	mustSample(t, fams, 2, "vigil_endpoint_active_streams", "cluster", "orders", "endpoint", "127.0.0.1:1")
	mustNotHave(t, fams, "vigil_tcp_bytes_total", "listener", "api", "direction", "to_client")

	g.RPCFinished("orders", "", "127.0.0.1:1", "OK", 2*time.Millisecond)
	g.RPCFinished("orders", "", "127.0.0.1:1", "NOT_A_CODE", 2*time.Millisecond)
	g.RPCFinished("orders", "", "", "UNAVAILABLE", time.Microsecond) // no endpoint reached
	g.RPCRetried("orders", "127.0.0.1:1")
	g.RPCReplayed("orders", "127.0.0.1:1", "refused_stream")
	g.RPCReplayed("orders", "127.0.0.1:1", "goaway")
	g.RPCReplayed("orders", "127.0.0.1:1", "goaway")
	g.ConnClosed()
	fams = scrape(t, m)
	mustSample(t, fams, 1, "vigil_upstream_rq_replayed_total", "cluster", "orders", "reason", "refused_stream")
	mustSample(t, fams, 2, "vigil_upstream_rq_replayed_total", "cluster", "orders", "reason", "goaway")
	mustSample(t, fams, 1, "vigil_upstream_rq_total", "cluster", "orders", "route", "", "code", "OK")
	mustSample(t, fams, 1, "vigil_upstream_rq_total", "cluster", "orders", "route", "", "code", "UNKNOWN")
	mustSample(t, fams, 1, "vigil_upstream_rq_total", "cluster", "orders", "route", "", "code", "UNAVAILABLE")
	if n := len(fams["vigil_upstream_rq_total"].GetMetric()); n != 3 {
		t.Errorf("%d code series; want 3 (codes with no RPC are not exported)", n)
	}
	mustSample(t, fams, 3, "vigil_upstream_rq_duration_seconds", "cluster", "orders", "route", "")
	mustSample(t, fams, 1, "vigil_upstream_connect_failures_total", "cluster", "orders")
	mustSample(t, fams, 0, "vigil_listener_active_streams", "listener", "api")
	mustSample(t, fams, 0, "vigil_endpoint_active_streams", "cluster", "orders", "endpoint", "127.0.0.1:1")
	mustSample(t, fams, 1, "vigil_listener_active_connections", "listener", "api")
}

func TestTCPConnections(t *testing.T) {
	s := newTestStore(t)
	s.addCluster("db", "127.0.0.1:1")
	s.addListener("raw", config.ProtocolTCP, "db")
	m := New(Options{Store: s.Store})
	h := m.TCP("raw")
	h.ConnectionOpened("db", "127.0.0.1:1")
	h.ConnectionOpened("db", "127.0.0.1:1")
	h.DialFailed("db", "127.0.0.1:1", errors.New("connection refused"))
	h.ConnectionClosed(tcpproxy.ConnStats{Cluster: "db", Outcome: tcpproxy.OutcomeOverLimit})
	h.ConnectionClosed(tcpproxy.ConnStats{Cluster: "db", Outcome: tcpproxy.OutcomeNoHealthyUpstream})
	h.ConnectionClosed(tcpproxy.ConnStats{Cluster: "db", Endpoint: "127.0.0.1:1", Outcome: tcpproxy.OutcomeOK,
		BytesToUpstream: 10, BytesToClient: 20})

	fams := scrape(t, m)
	mustSample(t, fams, 1, "vigil_listener_active_connections", "listener", "raw")
	mustSample(t, fams, 1, "vigil_endpoint_active_connections", "cluster", "db", "endpoint", "127.0.0.1:1")
	mustSample(t, fams, 3, "vigil_listener_connections_total", "listener", "raw")
	mustSample(t, fams, 1, "vigil_listener_connections_rejected_total", "listener", "raw")
	mustSample(t, fams, 1, "vigil_tcp_connections_closed_total", "listener", "raw", "outcome", "ok")
	mustSample(t, fams, 1, "vigil_tcp_connections_closed_total", "listener", "raw", "outcome", "over_limit")
	mustSample(t, fams, 1, "vigil_tcp_connections_closed_total", "listener", "raw", "outcome", "no_healthy_upstream")
	mustSample(t, fams, 0, "vigil_tcp_connections_closed_total", "listener", "raw", "outcome", "idle_timeout")
	mustSample(t, fams, 10, "vigil_tcp_bytes_total", "listener", "raw", "direction", "to_upstream")
	mustSample(t, fams, 20, "vigil_tcp_bytes_total", "listener", "raw", "direction", "to_client")
	mustSample(t, fams, 1, "vigil_upstream_connect_failures_total", "cluster", "db")
	mustNotHave(t, fams, "vigil_listener_active_streams", "listener", "raw")
}

func TestRemovedEndpointKeepsCountingUntilIdle(t *testing.T) {
	s := newTestStore(t)
	s.addCluster("db", "127.0.0.1:1")
	s.addListener("raw", config.ProtocolTCP, "db")
	m := New(Options{Store: s.Store})
	h := m.TCP("raw")
	h.ConnectionOpened("db", "127.0.0.1:1")

	// The endpoint and the listener leave the configuration with a
	// connection still open: their counts survive the scrape...
	s.removeEndpoint("db", "127.0.0.1:1")
	s.removeListener("raw")
	fams := scrape(t, m)
	mustNotHave(t, fams, "vigil_endpoint_active_connections", "cluster", "db", "endpoint", "127.0.0.1:1")
	if st, found := m.Endpoint("db", "127.0.0.1:1"); !found || st.Inflight != 1 {
		t.Fatalf("open connection of a removed endpoint forgotten: %+v, %v", st, found)
	}
	// ...and go back to zero, never below, when it closes; then the next
	// scrape forgets them.
	h.ConnectionClosed(tcpproxy.ConnStats{Cluster: "db", Endpoint: "127.0.0.1:1", Outcome: tcpproxy.OutcomeEndpointClosed})
	if st, _ := m.Endpoint("db", "127.0.0.1:1"); st.Inflight != 0 {
		t.Fatalf("inflight after close = %d", st.Inflight)
	}
	scrape(t, m)
	if _, found := m.Endpoint("db", "127.0.0.1:1"); found {
		t.Fatal("idle removed endpoint kept after a scrape")
	}
	if _, found := m.listeners.Load("raw"); found {
		t.Fatal("idle removed listener kept after a scrape")
	}
	// A close reported after the state was dropped must not go negative.
	h.ConnectionClosed(tcpproxy.ConnStats{Cluster: "db", Endpoint: "127.0.0.1:1", Outcome: tcpproxy.OutcomeOK})
	if _, found := m.Endpoint("db", "127.0.0.1:1"); found {
		t.Fatal("a close created endpoint state")
	}
}

func TestReloads(t *testing.T) {
	m := New(Options{})
	fams := scrape(t, m)
	mustSample(t, fams, 0, "vigil_config_reloads_total", "result", "success")
	mustSample(t, fams, 0, "vigil_config_reloads_total", "result", "failure")
	mustSample(t, fams, 1, "vigil_config_last_reload_successful")
	loaded, _ := sample(fams, "vigil_config_last_reload_success_timestamp_seconds")
	if loaded <= 0 {
		t.Fatalf("load timestamp %v", loaded)
	}

	m.Reload(false)
	fams = scrape(t, m)
	mustSample(t, fams, 1, "vigil_config_reloads_total", "result", "failure")
	mustSample(t, fams, 0, "vigil_config_last_reload_successful")
	mustSample(t, fams, loaded, "vigil_config_last_reload_success_timestamp_seconds")

	m.Reload(true)
	fams = scrape(t, m)
	mustSample(t, fams, 1, "vigil_config_reloads_total", "result", "success")
	mustSample(t, fams, 1, "vigil_config_last_reload_successful")
}

func TestWithoutStore(t *testing.T) {
	m := New(Options{})
	m.TCP("raw").ConnectionOpened("db", "127.0.0.1:1")
	m.GRPC("api").RPCStarted("orders", "127.0.0.1:2")
	built(m, "orders", 1)
	fams := scrape(t, m)
	mustSample(t, fams, 1, "vigil_endpoint_active_connections", "cluster", "db", "endpoint", "127.0.0.1:1")
	mustSample(t, fams, 1, "vigil_endpoint_active_streams", "cluster", "orders", "endpoint", "127.0.0.1:2")
	mustSample(t, fams, 1, "vigil_cluster_routable_endpoints", "cluster", "orders")
	mustSample(t, fams, 1, "vigil_listener_active_connections", "listener", "raw")
	if fams["vigil_endpoint_healthy"] != nil {
		t.Fatal("endpoint health exported without a store to read it from")
	}
}

func TestLabelBounds(t *testing.T) {
	for _, tc := range []struct{ in, reason, code string }{
		{"OK", "OK", "OK"},
		{"NOT_SERVING", "NOT_SERVING", "UNKNOWN"},
		{"SERVICE_UNKNOWN", "SERVICE_UNKNOWN", "UNKNOWN"},
		{"UNAVAILABLE", "UNAVAILABLE", "UNAVAILABLE"},
		{"UNAUTHENTICATED", "UNAUTHENTICATED", "UNAUTHENTICATED"},
		{"", "OTHER", "UNKNOWN"},
		{"dial tcp 127.0.0.1:1: connection refused", "OTHER", "UNKNOWN"},
		{"unavailable", "OTHER", "UNKNOWN"},
	} {
		if got := reasonLabel(tc.in); got != tc.reason {
			t.Errorf("reasonLabel(%q) = %q; want %q", tc.in, got, tc.reason)
		}
		if got := codeName(codeIndex(tc.in)); got != tc.code {
			t.Errorf("code label of %q = %q; want %q", tc.in, got, tc.code)
		}
	}
}

func TestDataPathHooksDoNotAllocate(t *testing.T) {
	m := New(Options{})
	g, tc := m.GRPC("api"), m.TCP("raw")
	// Warm up: the first RPC of a cluster and endpoint creates their state.
	g.RPCStarted("orders", "127.0.0.1:1")
	g.RPCFinished("orders", "", "127.0.0.1:1", "OK", time.Millisecond)
	tc.ConnectionOpened("orders", "127.0.0.1:1")
	tc.ConnectionClosed(tcpproxy.ConnStats{Cluster: "orders", Endpoint: "127.0.0.1:1", Outcome: tcpproxy.OutcomeOK})
	m.Probe("orders", "127.0.0.1:1", ok(time.Millisecond))

	for name, fn := range map[string]func(){
		"grpc rpc": func() {
			g.RPCStarted("orders", "127.0.0.1:1")
			g.RPCFinished("orders", "", "127.0.0.1:1", "OK", time.Millisecond)
		},
		"tcp connection": func() {
			tc.ConnectionOpened("orders", "127.0.0.1:1")
			tc.ConnectionClosed(tcpproxy.ConnStats{Cluster: "orders", Endpoint: "127.0.0.1:1", Outcome: tcpproxy.OutcomeOK})
		},
		"probe": func() { m.Probe("orders", "127.0.0.1:1", ok(time.Millisecond)) },
	} {
		if n := testing.AllocsPerRun(1000, fn); n != 0 {
			t.Errorf("%s: %v allocations per call", name, n)
		}
	}
}
