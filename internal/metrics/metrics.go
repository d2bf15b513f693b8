package metrics

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/state"
)

// Options configure a Metrics.
type Options struct {
	// Store is the state store whose clusters, endpoints and listeners
	// bound the label sets, and from which endpoint health and cluster
	// counts are read at scrape time. Without it those series are absent
	// and nothing is ever dropped (fine for tests and library use).
	Store *state.Store
	// Version is reported as vigil_build_info{version}.
	Version string
}

// Histogram buckets, in seconds.
var (
	// probeBuckets cover a loopback Check (well under a millisecond) up to
	// the longest sensible probe timeout.
	probeBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	// rqBuckets add room for long RPCs and streams.
	rqBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}
)

// Label values of vigil_health_checks_total{result} and
// vigil_config_reloads_total{result}.
const (
	resultSuccess = "success"
	resultFailure = "failure"
)

// Metrics is vigil's instrumentation. All methods are safe for concurrent
// use; the data-path ones neither lock nor allocate once the cluster or
// endpoint they name has been seen.
type Metrics struct {
	reg   *prometheus.Registry
	store *state.Store

	healthChecks        *prometheus.CounterVec   // cluster, result
	healthCheckFailures *prometheus.CounterVec   // cluster, reason
	healthCheckDuration *prometheus.HistogramVec // cluster, result
	admissions          *prometheus.CounterVec   // cluster
	evictions           *prometheus.CounterVec   // cluster, reason
	readmissions        *prometheus.CounterVec   // cluster
	outlierEjections    *prometheus.CounterVec   // cluster, reason
	upstreamRq          *prometheus.CounterVec   // cluster, code
	upstreamRqDuration  *prometheus.HistogramVec // cluster
	upstreamConnectFail *prometheus.CounterVec   // cluster
	upstreamReplayed    *prometheus.CounterVec   // cluster, reason
	discovery           discoveryMetrics
	clusterVecs         []*prometheus.MetricVec // every vec with a cluster label, for pruning

	reloads            *prometheus.CounterVec // result
	lastReloadOK       prometheus.Gauge
	lastReloadSuccessT prometheus.Gauge

	// mu serializes the slow paths: creating a cluster's children and
	// pruning. A hot path never takes it once its cluster is known.
	mu        sync.Mutex
	clusters  sync.Map // string -> *clusterSeries
	endpoints sync.Map // endpointKey -> *endpointState
	listeners sync.Map // string -> *listenerState
	// clientCerts holds, by cluster, what its client certificates are read
	// from (see TLSClientCertificates).
	clientCerts sync.Map // string -> clientCertSource

	weights atomic.Pointer[func(cluster, address string) (float64, bool)]
}

// New returns a Metrics with its own registry, which already holds the Go
// and process collectors.
func New(opts Options) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), store: opts.Store}
	m.healthChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_health_checks_total",
		Help: "Health-check results (probes and statuses pushed on Watch streams), by outcome: success or failure.",
	}, []string{"cluster", "result"})
	m.healthCheckFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_health_check_failures_total",
		Help: "Failed health checks by reason: the health status answered (NOT_SERVING, ...) or the gRPC code name of the failed call.",
	}, []string{"cluster", "reason"})
	m.healthCheckDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "vigil_health_check_duration_seconds",
		Help:    "How long health-check probes took (Check calls and TCP connects; pushed Watch statuses are not timed).",
		Buckets: probeBuckets,
	}, []string{"cluster", "result"})
	m.admissions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_admissions_total",
		Help: "New endpoints admitted after their first successful probe (pending -> healthy).",
	}, []string{"cluster"})
	m.evictions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_evictions_total",
		Help: "Endpoints evicted (pending or healthy -> unhealthy), by reason.",
	}, []string{"cluster", "reason"})
	m.readmissions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_readmissions_total",
		Help: "Evicted endpoints readmitted (unhealthy -> healthy).",
	}, []string{"cluster"})
	m.outlierEjections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_outlier_ejections_total",
		Help: "Endpoints ejected by outlier detection (each is also counted in vigil_evictions_total), by the last failure's gRPC code name.",
	}, []string{"cluster", "reason"})
	m.upstreamRq = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_upstream_rq_total",
		Help: "RPCs forwarded by grpc listeners, by cluster, route (its name, else its index; \"\" for a listener's default cluster) and canonical gRPC status code name.",
	}, []string{"cluster", "route", "code"})
	m.upstreamRqDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "vigil_upstream_rq_duration_seconds",
		Help:    "Duration of RPCs forwarded by grpc listeners, from arrival to the end of the call, by cluster and route.",
		Buckets: rqBuckets,
	}, []string{"cluster", "route"})
	m.upstreamConnectFail = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_upstream_connect_failures_total",
		Help: "Attempts to reach an endpoint that failed before anything was sent (TCP dial failures, gRPC RPCs moved to another endpoint).",
	}, []string{"cluster"})
	m.upstreamReplayed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_upstream_rq_replayed_total",
		Help: "RPCs an endpoint did not process (reason refused_stream: reset with REFUSED_STREAM; goaway: above its GOAWAY's last stream) that a grpc listener sent again on another connection, transparently to the client.",
	}, []string{"cluster", "reason"})
	m.discovery = newDiscoveryMetrics()
	m.clusterVecs = []*prometheus.MetricVec{
		m.healthChecks.MetricVec, m.healthCheckFailures.MetricVec, m.healthCheckDuration.MetricVec,
		m.admissions.MetricVec, m.evictions.MetricVec, m.readmissions.MetricVec, m.outlierEjections.MetricVec,
		m.upstreamRq.MetricVec, m.upstreamRqDuration.MetricVec, m.upstreamConnectFail.MetricVec,
		m.discovery.updates.MetricVec, m.discovery.endpoints.MetricVec,
		m.upstreamReplayed.MetricVec,
	}

	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_config_reloads_total",
		Help: "Configuration reloads, by result: success, or failure (the configuration in force kept serving).",
	}, []string{"result"})
	// Both results exist from the start so that rate() and alerts work
	// before the first reload.
	m.reloads.WithLabelValues(resultSuccess)
	m.reloads.WithLabelValues(resultFailure)
	m.lastReloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vigil_config_last_reload_successful",
		Help: "1 if the last configuration load or reload succeeded, 0 if it was rejected.",
	})
	m.lastReloadOK.Set(1)
	m.lastReloadSuccessT = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vigil_config_last_reload_success_timestamp_seconds",
		Help: "When the configuration in force was loaded, as a Unix timestamp.",
	})
	m.lastReloadSuccessT.SetToCurrentTime()
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vigil_build_info",
		Help: "Always 1; the labels say which vigil is running.",
	}, []string{"version", "goversion"})
	version := opts.Version
	if version == "" {
		version = "unknown"
	}
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.healthChecks, m.healthCheckFailures, m.healthCheckDuration,
		m.admissions, m.evictions, m.readmissions, m.outlierEjections,
		m.upstreamRq, m.upstreamRqDuration, m.upstreamConnectFail, m.upstreamReplayed,
		m.discovery.updates, m.discovery.endpoints,
		m.reloads, m.lastReloadOK, m.lastReloadSuccessT, buildInfo,
		&liveCollector{m: m},
	)
	return m
}

// Registerer is the registry, for collectors of other packages.
func (m *Metrics) Registerer() prometheus.Registerer { return m.reg }

// Gather drops the series of clusters, endpoints and listeners that have
// left the store, then gathers the registry. It makes Metrics the
// prometheus.Gatherer to serve.
func (m *Metrics) Gather() ([]*dto.MetricFamily, error) {
	m.prune()
	return m.reg.Gather()
}

// Probe records one health-check result of an endpoint: every probe, and
// every status pushed on a Watch stream (checker.GroupOptions.OnProbe).
func (m *Metrics) Probe(cluster, endpoint string, r checker.Result) {
	cs := m.cluster(cluster)
	now := time.Now()
	if r.OK {
		cs.checkSuccess.get(m, cs).Inc()
		if !r.Pushed && r.Latency > 0 {
			cs.probeSuccess.get(m, cs).Observe(r.Latency.Seconds())
		}
	} else {
		cs.checkFailure.get(m, cs).Inc()
		if !r.Pushed && r.Latency > 0 {
			cs.probeFailure.get(m, cs).Observe(r.Latency.Seconds())
		}
		cs.failure(m, reasonLabel(r.Reason)).Inc()
	}
	es := m.endpoint(cluster, endpoint, true)
	es.lastProbe.Store(now.UnixNano())
	es.lastLatency.Store(int64(r.Latency)) // zero for a pushed status: not timed

}

// Handle counts what a pool's events say (event.Sink): admissions,
// evictions and readmissions, every one of them, and the size of each
// cluster's picker.
func (m *Metrics) Handle(events []event.Event) {
	for i := range events {
		ev := &events[i]
		switch ev.Kind {
		case event.EndpointAdmitted:
			cs := m.cluster(ev.Cluster)
			m.withChild(cs, func() { m.admissions.WithLabelValues(ev.Cluster).Inc() })
		case event.EndpointEvicted:
			cs := m.cluster(ev.Cluster)
			m.withChild(cs, func() {
				m.evictions.WithLabelValues(ev.Cluster, reasonLabel(ev.Status.Reason)).Inc()
				if ev.Outlier {
					m.outlierEjections.WithLabelValues(ev.Cluster, reasonLabel(ev.Ejection.Reason)).Inc()
				}
			})
		case event.EndpointReadmitted:
			cs := m.cluster(ev.Cluster)
			m.withChild(cs, func() { m.readmissions.WithLabelValues(ev.Cluster).Inc() })
		case event.PickerBuilt:
			cs := m.cluster(ev.Cluster)
			cs.routable.Store(int64(ev.Routable))
			cs.hasSnapshot.Store(true)
		}
	}
}

// Reload records the outcome of a configuration reload.
func (m *Metrics) Reload(ok bool) {
	if ok {
		m.reloads.WithLabelValues(resultSuccess).Inc()
		m.lastReloadOK.Set(1)
		m.lastReloadSuccessT.SetToCurrentTime()
		return
	}
	m.reloads.WithLabelValues(resultFailure).Inc()
	m.lastReloadOK.Set(0)
}

// EndpointStats is what the metrics know about one endpoint.
type EndpointStats struct {
	// LastProbe is when the latest health-check result arrived; zero
	// before the first.
	LastProbe time.Time
	// LastLatency is how long the latest probe took; zero when the latest
	// result was a status pushed on a Watch stream, which is not timed.
	LastLatency time.Duration
	// Inflight counts the TCP connections and gRPC streams open to the
	// endpoint through the data paths.
	Inflight int64
	// EffectiveWeight is the weight traffic is spread by now (less than
	// the configured weight while slow start ramps the endpoint up);
	// HasEffectiveWeight says whether it is known.
	EffectiveWeight    float64
	HasEffectiveWeight bool
	// Load is the endpoint's latest ORCA load report, in a
	// weighted_round_robin cluster; nil otherwise or before the first.
	Load *LoadReport
}

// LoadReport is an endpoint's latest ORCA load report.
type LoadReport struct {
	CPUUtilization, ApplicationUtilization, QPS, EPS float64
	// At is when it came.
	At time.Time
	// Weight is the weight the endpoint's reports give it now, 0 when
	// they give none (blackout, expired, no utilization): it then gets
	// the mean.
	Weight float64
}

// SetWeights makes the metrics export vigil_endpoint_weight{cluster,endpoint}
// with weight, read at scrape time: the weight traffic is spread by now,
// and false for an endpoint it does not know.
func (m *Metrics) SetWeights(weight func(cluster, address string) (float64, bool)) {
	m.weights.Store(&weight)
}

// Endpoint returns what the metrics know about one endpoint, and false if
// they have seen neither a probe of it nor traffic to it.
func (m *Metrics) Endpoint(cluster, address string) (EndpointStats, bool) {
	v, ok := m.endpoints.Load(endpointKey{cluster, address})
	if !ok {
		return EndpointStats{}, false
	}
	es := v.(*endpointState)
	st := EndpointStats{
		LastLatency: time.Duration(es.lastLatency.Load()),
		Inflight:    es.conns.Load() + es.streams.Load(),
	}
	if ns := es.lastProbe.Load(); ns != 0 {
		st.LastProbe = time.Unix(0, ns)
	}
	return st, true
}

// clusterSeries are one cluster's pre-resolved children and live values.
type clusterSeries struct {
	name string
	// dead is set under Metrics.mu when the cluster's series were
	// dropped; children are no longer created for it.
	dead bool

	checkSuccess, checkFailure lazy[prometheus.Counter]
	probeSuccess, probeFailure lazy[prometheus.Observer]
	connectFailures            lazy[prometheus.Counter]
	replayedRefused            lazy[prometheus.Counter]
	replayedGoAway             lazy[prometheus.Counter]
	// rq holds the RPC series of the route "" (a listener's default
	// cluster); routes those of each route label (*routeSeries).
	rq       *routeSeries
	routes   sync.Map // route label -> *routeSeries
	failures sync.Map // reason -> prometheus.Counter

	routable    atomic.Int64
	hasSnapshot atomic.Bool
}

// failure returns the failed-checks counter of a reason.
func (cs *clusterSeries) failure(m *Metrics, reason string) prometheus.Counter {
	if c, ok := cs.failures.Load(reason); ok {
		return c.(prometheus.Counter)
	}
	c := discardCounter
	m.withChild(cs, func() {
		c = m.healthCheckFailures.WithLabelValues(cs.name, reason)
		cs.failures.Store(reason, c)
	})
	return c
}

// routeSeries are the RPC series of one route of a cluster.
type routeSeries struct {
	codes    [numCodes]lazy[prometheus.Counter]
	duration lazy[prometheus.Observer]
}

// route returns the series of a route label, creating them on first use
// (route labels are bounded by the configuration: names or indices).
func (m *Metrics) route(cs *clusterSeries, label string) *routeSeries {
	if label == "" {
		return cs.rq
	}
	if v, ok := cs.routes.Load(label); ok {
		return v.(*routeSeries)
	}
	rs := m.newRouteSeries(label)
	v, _ := cs.routes.LoadOrStore(label, rs)
	return v.(*routeSeries)
}

func (m *Metrics) newRouteSeries(label string) *routeSeries {
	rs := &routeSeries{}
	for i := range rs.codes {
		code := codeName(i)
		rs.codes[i].make = func(c string) prometheus.Counter { return m.upstreamRq.WithLabelValues(c, label, code) }
		rs.codes[i].orphan = discardCounter
	}
	rs.duration.make = func(c string) prometheus.Observer { return m.upstreamRqDuration.WithLabelValues(c, label) }
	rs.duration.orphan = discardObserver{}
	return rs
}

// lazy is a child created on first use, so that a cluster only exports the
// series it has something to say in.
type lazy[T any] struct {
	p    atomic.Pointer[T]
	make func(cluster string) T
	// orphan is handed out once the cluster's series were dropped.
	orphan T
}

func (l *lazy[T]) get(m *Metrics, cs *clusterSeries) T {
	if p := l.p.Load(); p != nil {
		return *p
	}
	m.withChild(cs, func() {
		v := l.make(cs.name)
		l.p.Store(&v)
	})
	if p := l.p.Load(); p != nil {
		return *p
	}
	return l.orphan // the cluster is gone
}

// discardCounter and discardObserver stand in for the children of a
// cluster whose series were dropped: a late hook updates them and nobody
// exports them.
var discardCounter = prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_discarded", Help: "Not exported."})

type discardObserver struct{}

func (discardObserver) Observe(float64) {}

// withChild runs create, which creates children of cs's cluster in the
// vecs, unless the cluster's series have been dropped meanwhile: a late
// hook for a removed cluster must not bring its series back for good.
func (m *Metrics) withChild(cs *clusterSeries, create func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !cs.dead {
		create()
	}
}

// cluster returns the series of a cluster, creating them on first use.
func (m *Metrics) cluster(name string) *clusterSeries {
	if v, ok := m.clusters.Load(name); ok {
		return v.(*clusterSeries)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.clusters.Load(name); ok {
		return v.(*clusterSeries)
	}
	cs := m.newClusterSeries(name)
	m.clusters.Store(name, cs)
	return cs
}

func (m *Metrics) newClusterSeries(name string) *clusterSeries {
	counter := func(l *lazy[prometheus.Counter], vec *prometheus.CounterVec, lvs ...string) {
		l.make = func(c string) prometheus.Counter { return vec.WithLabelValues(append([]string{c}, lvs...)...) }
		l.orphan = discardCounter
	}
	observer := func(l *lazy[prometheus.Observer], vec *prometheus.HistogramVec, lvs ...string) {
		l.make = func(c string) prometheus.Observer { return vec.WithLabelValues(append([]string{c}, lvs...)...) }
		l.orphan = discardObserver{}
	}
	cs := &clusterSeries{name: name}
	counter(&cs.checkSuccess, m.healthChecks, resultSuccess)
	counter(&cs.checkFailure, m.healthChecks, resultFailure)
	observer(&cs.probeSuccess, m.healthCheckDuration, resultSuccess)
	observer(&cs.probeFailure, m.healthCheckDuration, resultFailure)
	counter(&cs.connectFailures, m.upstreamConnectFail)
	counter(&cs.replayedRefused, m.upstreamReplayed, "refused_stream")
	counter(&cs.replayedGoAway, m.upstreamReplayed, "goaway")
	cs.rq = m.newRouteSeries("")
	return cs
}

// endpointKey names an endpoint of a cluster.
type endpointKey struct{ cluster, address string }

// endpointState is what the hooks count for one endpoint.
type endpointState struct {
	lastProbe   atomic.Int64 // Unix nanoseconds
	lastLatency atomic.Int64 // nanoseconds
	conns       atomic.Int64 // TCP connections open to the endpoint
	streams     atomic.Int64 // gRPC streams open to the endpoint
}

// endpoint returns an endpoint's state. With create false it returns nil
// for an endpoint not seen yet: a hook that only decrements must not
// create state (it would go negative after a prune).
func (m *Metrics) endpoint(cluster, address string, create bool) *endpointState {
	k := endpointKey{cluster, address}
	if v, ok := m.endpoints.Load(k); ok {
		return v.(*endpointState)
	}
	if !create {
		return nil
	}
	v, _ := m.endpoints.LoadOrStore(k, &endpointState{})
	return v.(*endpointState)
}
