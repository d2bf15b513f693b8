package metrics

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/state"
)

var (
	endpointLabels = []string{"cluster", "endpoint"}

	descEndpointHealthy = prometheus.NewDesc("vigil_endpoint_healthy",
		"1 if the endpoint is healthy and takes traffic, 0 if it is pending, unhealthy or draining.", endpointLabels, nil)
	descEndpointFailures = prometheus.NewDesc("vigil_endpoint_consecutive_failures",
		"Consecutive failed health checks of the endpoint (capped once it is evicted).", endpointLabels, nil)
	descEndpointEjected = prometheus.NewDesc("vigil_endpoint_ejected",
		"1 while outlier detection has the endpoint ejected, else 0.", endpointLabels, nil)
	descEndpointWeight = prometheus.NewDesc("vigil_endpoint_weight",
		"The weight traffic is spread by now: the configured weight, or less while slow start ramps the endpoint up; under weighted_round_robin, the weight its load reports give it (qps/utilization), or the mean.", endpointLabels, nil)
	descEndpointConns = prometheus.NewDesc("vigil_endpoint_active_connections",
		"TCP connections open to the endpoint through tcp listeners.", endpointLabels, nil)
	descEndpointStreams = prometheus.NewDesc("vigil_endpoint_active_streams",
		"RPCs (gRPC streams) open to the endpoint through grpc listeners.", endpointLabels, nil)

	descClusterEndpoints = prometheus.NewDesc("vigil_cluster_endpoints",
		"Endpoints of the cluster by health: pending, healthy, unhealthy, draining.", []string{"cluster", "health"}, nil)
	descClusterPanic = prometheus.NewDesc("vigil_cluster_panic",
		"1 while the cluster is in panic mode (fewer than panic_threshold percent of its endpoints healthy).", []string{"cluster"}, nil)
	descClusterRoutable = prometheus.NewDesc("vigil_cluster_routable_endpoints",
		"Endpoints the cluster's balancer picks from: the healthy ones, plus the panic-eligible ones in panic mode.", []string{"cluster"}, nil)

	descListenerConns = prometheus.NewDesc("vigil_listener_active_connections",
		"Client connections open on the listener (tcp: those connected to an endpoint).", []string{"listener"}, nil)
	descListenerStreams = prometheus.NewDesc("vigil_listener_active_streams",
		"RPCs in flight through the grpc listener.", []string{"listener"}, nil)
	descListenerAccepted = prometheus.NewDesc("vigil_listener_connections_total",
		"Client connections the listener accepted and handled.", []string{"listener"}, nil)
	descListenerRejected = prometheus.NewDesc("vigil_listener_connections_rejected_total",
		"Client connections closed at once because the listener was at max_connections.", []string{"listener"}, nil)
	descTCPClosed = prometheus.NewDesc("vigil_tcp_connections_closed_total",
		"Client connections of tcp listeners by how they ended.", []string{"listener", "outcome"}, nil)
	descAccessLogDropped = prometheus.NewDesc("vigil_access_log_dropped_total",
		"Access log records of the listener dropped because the log's buffer was full (its writer behind or blocked).", []string{"listener"}, nil)
	descTCPBytes = prometheus.NewDesc("vigil_tcp_bytes_total",
		"Bytes forwarded by tcp listeners, by direction: to_upstream or to_client.", []string{"listener", "direction"}, nil)
)

var healths = [...]checker.Health{checker.Pending, checker.Healthy, checker.Unhealthy, checker.Draining}

// liveCollector exports what is read at scrape time: endpoint and cluster
// health from the store, and the atomics the data-path hooks keep.
type liveCollector struct{ m *Metrics }

func (c *liveCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descEndpointHealthy, descEndpointFailures, descEndpointEjected, descEndpointWeight, descEndpointConns, descEndpointStreams,
		descClusterEndpoints, descClusterPanic, descClusterRoutable,
		descListenerConns, descListenerStreams, descListenerAccepted, descListenerRejected,
		descTCPClosed, descTCPBytes, descTLSHandshakes, descTLSExpiry, descAccessLogDropped,
	} {
		ch <- d
	}
}

func (c *liveCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	if m.store == nil {
		c.collectWithoutStore(ch)
		return
	}
	m.collectClientTLS(ch, time.Now())
	snap := m.store.Snapshot()
	if err := c.collectClusters(ch, snap); err != nil {
		ch <- prometheus.NewInvalidMetric(descEndpointHealthy, err)
	}
	listeners, err := snap.Listeners(nil)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descListenerConns, fmt.Errorf("read listeners: %w", err))
		return
	}
	for _, l := range listeners {
		v, ok := m.listeners.Load(l.Name)
		if !ok {
			continue // its proxy has not been created yet
		}
		collectListener(ch, l.Name, l.Protocol, l.AccessLog.On(), v.(*listenerState))
	}
}

func (c *liveCollector) collectClusters(ch chan<- prometheus.Metric, snap state.Txn) error {
	m := c.m
	clusters, err := snap.Clusters(nil)
	if err != nil {
		return fmt.Errorf("read clusters: %w", err)
	}
	for _, cl := range clusters {
		eps, err := snap.EndpointsByCluster(nil, cl.Name)
		if err != nil {
			return fmt.Errorf("read endpoints: %w", err)
		}
		var counts [len(healths)]int
		for _, e := range eps {
			if int(e.Status.Health) < len(counts) {
				counts[e.Status.Health]++
			}
			healthy := 0.0
			if e.Status.Health == checker.Healthy {
				healthy = 1
			}
			ch <- gauge(descEndpointHealthy, healthy, e.Cluster, e.Address)
			ch <- gauge(descEndpointFailures, float64(e.Status.Failures), e.Cluster, e.Address)
			ejected := 0.0
			if e.Ejection.Active() {
				ejected = 1
			}
			ch <- gauge(descEndpointEjected, ejected, e.Cluster, e.Address)
			if weight := m.weights.Load(); weight != nil && e.Status.Health != checker.Draining {
				if w, ok := (*weight)(e.Cluster, e.Address); ok {
					ch <- gauge(descEndpointWeight, w, e.Cluster, e.Address)
				}
			}
			var conns, streams int64
			if v, ok := m.endpoints.Load(endpointKey{e.Cluster, e.Address}); ok {
				es := v.(*endpointState)
				conns, streams = es.conns.Load(), es.streams.Load()
			}
			ch <- gauge(descEndpointConns, float64(conns), e.Cluster, e.Address)
			ch <- gauge(descEndpointStreams, float64(streams), e.Cluster, e.Address)
		}
		for i, h := range healths {
			ch <- gauge(descClusterEndpoints, float64(counts[i]), cl.Name, h.String())
		}
		panicking := 0.0
		if cl.Panic {
			panicking = 1
		}
		ch <- gauge(descClusterPanic, panicking, cl.Name)
		if v, ok := m.clusters.Load(cl.Name); ok {
			if cs := v.(*clusterSeries); cs.hasSnapshot.Load() {
				ch <- gauge(descClusterRoutable, float64(cs.routable.Load()), cl.Name)
			}
		}
	}
	return nil
}

// collectWithoutStore exports what the hooks know when there is no store
// to read health from.
func (c *liveCollector) collectWithoutStore(ch chan<- prometheus.Metric) {
	c.m.endpoints.Range(func(k, v any) bool {
		key, es := k.(endpointKey), v.(*endpointState)
		ch <- gauge(descEndpointConns, float64(es.conns.Load()), key.cluster, key.address)
		ch <- gauge(descEndpointStreams, float64(es.streams.Load()), key.cluster, key.address)
		return true
	})
	c.m.clusters.Range(func(k, v any) bool {
		if cs := v.(*clusterSeries); cs.hasSnapshot.Load() {
			ch <- gauge(descClusterRoutable, float64(cs.routable.Load()), cs.name)
		}
		return true
	})
	c.m.listeners.Range(func(k, v any) bool {
		collectListener(ch, k.(string), "", true, v.(*listenerState))
		return true
	})
	c.m.collectClientTLS(ch, time.Now())
}

// collectListener exports a listener's series; protocol "" (unknown)
// exports those of both protocols. The access log's drops are exported
// while it is on, or once there were some.
func collectListener(ch chan<- prometheus.Metric, name string, protocol config.Protocol, accessLog bool, l *listenerState) {
	if dropped := l.accessLogDropped.Load(); accessLog || dropped > 0 {
		ch <- counter(descAccessLogDropped, float64(dropped), name)
	}
	collectTLS(ch, name, l, time.Now())
	ch <- gauge(descListenerConns, float64(l.conns.Load()), name)
	ch <- counter(descListenerAccepted, float64(l.accepted.Load()), name)
	ch <- counter(descListenerRejected, float64(l.rejected.Load()), name)
	if protocol != config.ProtocolTCP {
		ch <- gauge(descListenerStreams, float64(l.streams.Load()), name)
	}
	if protocol != config.ProtocolGRPC {
		for i, o := range tcpOutcomes {
			ch <- counter(descTCPClosed, float64(l.outcomes[i].Load()), name, string(o))
		}
		ch <- counter(descTCPBytes, float64(l.bytesToUpstream.Load()), name, "to_upstream")
		ch <- counter(descTCPBytes, float64(l.bytesToClient.Load()), name, "to_client")
	}
}

func gauge(d *prometheus.Desc, v float64, lvs ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lvs...)
}

func counter(d *prometheus.Desc, v float64, lvs ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lvs...)
}

// live is what the store holds right now.
type live struct {
	clusters  map[string]bool
	endpoints map[endpointKey]bool
	listeners map[string]bool
}

func readLive(snap state.Txn) (live, error) {
	l := live{clusters: map[string]bool{}, endpoints: map[endpointKey]bool{}, listeners: map[string]bool{}}
	clusters, err := snap.Clusters(nil)
	if err != nil {
		return l, fmt.Errorf("read clusters: %w", err)
	}
	for _, c := range clusters {
		l.clusters[c.Name] = true
		eps, err := snap.EndpointsByCluster(nil, c.Name)
		if err != nil {
			return l, fmt.Errorf("read endpoints: %w", err)
		}
		for _, e := range eps {
			l.endpoints[endpointKey{e.Cluster, e.Address}] = true
		}
	}
	listeners, err := snap.Listeners(nil)
	if err != nil {
		return l, fmt.Errorf("read listeners: %w", err)
	}
	for _, x := range listeners {
		l.listeners[x.Name] = true
	}
	return l, nil
}

// prune drops the series and state of clusters, endpoints and listeners
// that have left the store, so that label sets stay bounded across
// reloads. Endpoint and listener state with connections or streams still
// open is kept until they end.
func (m *Metrics) prune() {
	if m.store == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// Read under mu: a cluster created after this read (a reload added
	// it back) cannot be pruned by this pass.
	l, err := readLive(m.store.Snapshot())
	if err != nil {
		return // keep everything; the next scrape tries again
	}
	m.clusters.Range(func(k, v any) bool {
		name := k.(string)
		if l.clusters[name] {
			return true
		}
		v.(*clusterSeries).dead = true
		m.clusters.Delete(name)
		for _, vec := range m.clusterVecs {
			vec.DeletePartialMatch(prometheus.Labels{"cluster": name})
		}
		return true
	})
	m.endpoints.Range(func(k, v any) bool {
		es := v.(*endpointState)
		if !l.endpoints[k.(endpointKey)] && es.conns.Load() == 0 && es.streams.Load() == 0 {
			m.endpoints.Delete(k)
		}
		return true
	})
	m.listeners.Range(func(k, v any) bool {
		ls := v.(*listenerState)
		if !l.listeners[k.(string)] && ls.conns.Load() == 0 && ls.streams.Load() == 0 {
			m.listeners.Delete(k)
		}
		return true
	})
}
