package server

import (
	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/grpcproxy"
	"github.com/vigil-proxy/vigil/balancer/tcpproxy"
	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/metrics"
)

// metricsHooks connects the data paths and the checkers to the metrics. A
// nil *metrics.Metrics turns every hook into a no-op, and the data paths
// get nil hooks (which they skip) rather than a no-op implementation.
type metricsHooks struct{ m *metrics.Metrics }

// newMetricsHooks returns hooks that record nothing.
func newMetricsHooks() *metricsHooks { return &metricsHooks{} }

// metricsHooksFor returns hooks that feed m (nil: record nothing).
func metricsHooksFor(m *metrics.Metrics) *metricsHooks { return &metricsHooks{m: m} }

// probe records every health-check result (checker.GroupOptions.OnProbe).
func (h *metricsHooks) probe(cluster, address string, r checker.Result) {
	if h.m != nil {
		h.m.Probe(cluster, address, r)
	}
}

// change records admissions, evictions and readmissions
// (checker.GroupOptions.OnChange).
func (h *metricsHooks) change(ch checker.Change) {
	if h.m != nil {
		h.m.Change(ch)
	}
}

// cluster records the snapshot a cluster's balancer now uses.
func (h *metricsHooks) cluster(name string, snap *balancer.Snapshot) {
	if h.m != nil {
		h.m.Cluster(name, snap)
	}
}

// reload records the outcome of a configuration reload.
func (h *metricsHooks) reload(ok bool) {
	if h.m != nil {
		h.m.Reload(ok)
	}
}

// tcp returns the hooks of a tcp listener, or nil.
func (h *metricsHooks) tcp(listener string) tcpproxy.Metrics {
	if h.m == nil {
		return nil // an untyped nil: the proxy then skips its hooks
	}
	return h.m.TCP(listener)
}

// grpc returns the hooks of a grpc listener, or nil.
func (h *metricsHooks) grpc(listener string) grpcproxy.Metrics {
	if h.m == nil {
		return nil
	}
	return h.m.GRPC(listener)
}
