package metrics

import "github.com/prometheus/client_golang/prometheus"

// Results of a discovery lookup, the result label of
// vigil_discovery_updates_total.
const (
	DiscoveryChanged   = "changed"   // the set differed from the last one and was applied
	DiscoveryUnchanged = "unchanged" // the same set again: nothing was done
	DiscoveryFailed    = "failed"    // no answer: the last good set stays
)

// discoveryMetrics are the series of endpoint discovery.
type discoveryMetrics struct {
	updates   *prometheus.CounterVec // cluster, source, result
	endpoints *prometheus.GaugeVec   // cluster, source
}

func newDiscoveryMetrics() discoveryMetrics {
	return discoveryMetrics{
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_discovery_updates_total",
			Help: "Discovery lookups (dns, srv: each refresh; kubernetes: each change the watch delivered, each failed list or watch), by result: changed, unchanged or failed.",
		}, []string{"cluster", "source", "result"}),
		endpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vigil_discovery_endpoints",
			Help: "Endpoints the last good answer of a cluster's discovery gave (Kubernetes: ready ones).",
		}, []string{"cluster", "source"}),
	}
}

// DiscoveryStarted creates a cluster's discovery series, so that rates and
// alerts work before the first failure: every result at 0, no endpoints.
func (m *Metrics) DiscoveryStarted(cluster, source string) {
	cs := m.cluster(cluster)
	m.withChild(cs, func() {
		for _, r := range []string{DiscoveryChanged, DiscoveryUnchanged, DiscoveryFailed} {
			m.discovery.updates.WithLabelValues(cluster, source, r)
		}
		m.discovery.endpoints.WithLabelValues(cluster, source)
	})
}

// DiscoveryUpdate counts one lookup of a cluster's discovery; endpoints is
// the size of the set applied, for DiscoveryChanged (the gauge keeps the
// last good set's size otherwise).
func (m *Metrics) DiscoveryUpdate(cluster, source, result string, endpoints int) {
	cs := m.cluster(cluster)
	m.withChild(cs, func() {
		m.discovery.updates.WithLabelValues(cluster, source, result).Inc()
		if result == DiscoveryChanged {
			m.discovery.endpoints.WithLabelValues(cluster, source).Set(float64(endpoints))
		}
	})
}

// DiscoveryStopped drops the series of a cluster's discovery that a reload
// removed or replaced by another source.
func (m *Metrics) DiscoveryStopped(cluster, source string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	labels := prometheus.Labels{"cluster": cluster, "source": source}
	m.discovery.updates.DeletePartialMatch(labels)
	m.discovery.endpoints.DeletePartialMatch(labels)
}
