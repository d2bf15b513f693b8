package server

import (
	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/grpcproxy"
	"github.com/vigil-proxy/vigil/balancer/tcpproxy"
	"github.com/vigil-proxy/vigil/checker"
)

// metricsHooks connects the data paths and the checkers to the metrics.
type metricsHooks struct{}

func newMetricsHooks() *metricsHooks { return &metricsHooks{} }

func (m *metricsHooks) probe(cluster, address string, r checker.Result) {}

func (m *metricsHooks) cluster(name string, snap *balancer.Snapshot) {}

func (m *metricsHooks) reload(ok bool) {}

func (m *metricsHooks) tcp(listener string) tcpproxy.Metrics { return nil }

func (m *metricsHooks) grpc(listener string) grpcproxy.Metrics { return nil }
