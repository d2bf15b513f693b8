package server

import (
	"log/slog"

	"github.com/vigil-proxy/vigil/balancer/pool"
)

// reloadPlan is what one apply changed: the listeners, the plans its
// pools returned, and the process settings. The `config reloaded` record
// is written from it, so that what is logged is what was applied.
type reloadPlan struct {
	listenersAdded, listenersRemoved, listenersChanged int
	clustersAdded, clustersRemoved, clustersChanged    int
	// Endpoint counts cover the clusters present before and after; the
	// endpoints of added or removed clusters come with their cluster.
	endpointsAdded, endpointsRemoved, weightsChanged int

	adminChanged, logChanged, shutdownChanged bool
}

// cluster records the plan a pool returned; added says the cluster was
// not in the configuration before.
func (r *reloadPlan) cluster(added bool, p pool.Plan) {
	switch {
	case added:
		r.clustersAdded++
	case !p.Empty():
		r.clustersChanged++
		r.endpointsAdded += len(p.Added)
		r.endpointsRemoved += len(p.Removed)
		r.weightsChanged += len(p.Changed)
	}
}

// empty reports whether nothing changed.
func (r reloadPlan) empty() bool { return r == reloadPlan{} }

// attrs are the keys of the `config reloaded` record: the counts of what
// changed, and admin_changed, log_changed, shutdown_changed when true.
func (r reloadPlan) attrs() []slog.Attr {
	attrs := []slog.Attr{
		slog.Bool("unchanged", r.empty()),
		slog.Int("listeners_added", r.listenersAdded),
		slog.Int("listeners_removed", r.listenersRemoved),
		slog.Int("listeners_changed", r.listenersChanged),
		slog.Int("clusters_added", r.clustersAdded),
		slog.Int("clusters_removed", r.clustersRemoved),
		slog.Int("clusters_changed", r.clustersChanged),
		slog.Int("endpoints_added", r.endpointsAdded),
		slog.Int("endpoints_removed", r.endpointsRemoved),
		slog.Int("weights_changed", r.weightsChanged),
	}
	for _, flag := range []struct {
		key string
		on  bool
	}{{"admin_changed", r.adminChanged}, {"log_changed", r.logChanged}, {"shutdown_changed", r.shutdownChanged}} {
		if flag.on {
			attrs = append(attrs, slog.Bool(flag.key, true))
		}
	}
	return attrs
}
