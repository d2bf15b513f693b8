package server

import (
	"github.com/vigil-proxy/vigil/balancer/grpcproxy"
	"github.com/vigil-proxy/vigil/balancer/tcpproxy"
	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/metrics"
)

// metricsHooks connects the data paths and the checkers to the metrics;
// the pools' events reach them as an event.Sink (Metrics.Handle).
type metricsHooks struct{ m *metrics.Metrics }

// probe records every health-check result (checker.GroupOptions.OnProbe).
func (h *metricsHooks) probe(cluster, address string, r checker.Result) {
	h.m.Probe(cluster, address, r)
}

// reload records the outcome of a configuration reload.
func (h *metricsHooks) reload(ok bool) { h.m.Reload(ok) }

// tcp returns the hooks of a tcp listener.
func (h *metricsHooks) tcp(listener string) tcpproxy.Metrics { return h.m.TCP(listener) }

// grpc returns the hooks of a grpc listener.
func (h *metricsHooks) grpc(listener string) grpcproxy.Metrics { return h.m.GRPC(listener) }

// endpoint returns an endpoint's last probe and activity.
func (h *metricsHooks) endpoint(cluster, address string) (metrics.EndpointStats, bool) {
	return h.m.Endpoint(cluster, address)
}
