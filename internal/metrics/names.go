package metrics

import "slices"

// names are the families vigil exports besides go_* and process_*. A test
// keeps the list equal to what a fully exercised Metrics gathers.
var names = []string{
	"vigil_access_log_dropped_total",
	"vigil_admissions_total",
	"vigil_build_info",
	"vigil_cluster_endpoints",
	"vigil_cluster_panic",
	"vigil_cluster_routable_endpoints",
	"vigil_config_last_reload_success_timestamp_seconds",
	"vigil_config_last_reload_successful",
	"vigil_config_reloads_total",
	"vigil_discovery_endpoints",
	"vigil_discovery_updates_total",
	"vigil_endpoint_active_connections",
	"vigil_endpoint_active_streams",
	"vigil_endpoint_consecutive_failures",
	"vigil_endpoint_ejected",
	"vigil_endpoint_healthy",
	"vigil_evictions_total",
	"vigil_health_check_duration_seconds",
	"vigil_health_check_failures_total",
	"vigil_health_checks_total",
	"vigil_listener_active_connections",
	"vigil_listener_active_streams",
	"vigil_listener_connections_rejected_total",
	"vigil_listener_connections_total",
	"vigil_outlier_ejections_total",
	"vigil_readmissions_total",
	"vigil_tcp_bytes_total",
	"vigil_tcp_connections_closed_total",
	"vigil_tls_certificate_expiry_seconds",
	"vigil_tls_handshakes_total",
	"vigil_upstream_connect_failures_total",
	"vigil_upstream_rq_duration_seconds",
	"vigil_upstream_rq_replayed_total",
	"vigil_upstream_rq_total",
}

// Names lists the metric families vigil exports (besides the Go and
// process collectors' go_* and process_*), sorted. A family appears in a
// scrape once it has a series: vigil_evictions_total after the first
// eviction, for example. Histograms are listed by their family name; their
// series are NAME_bucket, NAME_sum and NAME_count.
func Names() []string { return slices.Clone(names) }
