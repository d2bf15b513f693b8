// Package metrics is vigil's Prometheus instrumentation: a *Metrics owns its
// own registry (with the Go and process collectors), receives hooks from the
// health checkers, the cluster rebuilds, the reloads and both data paths
// (adapters for tcpproxy.Metrics and grpcproxy.Metrics), and serves as the
// prometheus.Gatherer behind the admin API's /metrics.
//
// Label sets stay bounded: no label carries a per-request value, status and
// reason labels are drawn from fixed sets, and series of clusters, endpoints
// and listeners that have left the state store are dropped when the
// registry is gathered. Endpoint health and cluster counts are not pushed
// at all: they are read from the store at scrape time, so they can never
// disagree with /clusters or outlive the endpoint they describe.
//
// The data-path hooks run once per RPC or connection: they look up
// per-cluster and per-endpoint state in sync.Maps (no lock, no allocation)
// and update atomics and pre-resolved Prometheus children.
package metrics
