package config

import "log/slog"

// Changes is what a reload changes: listeners and clusters are matched by
// name, endpoints by address. Lists follow the order of the configuration
// they come from (the new one for additions and changes, the old one for
// removals). Positions in the file are not compared: moving a block is no
// change.
type Changes struct {
	ListenersAdded, ListenersRemoved, ListenersChanged []string
	ClustersAdded, ClustersRemoved                     []string
	// Clusters holds the clusters present in both configurations that
	// changed, in the new configuration's order.
	Clusters []ClusterChanges

	AdminChanged, LogChanged, ShutdownChanged bool
}

// ClusterChanges is what changed in a cluster present in both configurations.
type ClusterChanges struct {
	Name string
	// PolicyChanged: lb_policy or panic_threshold changed.
	PolicyChanged bool
	// HealthCheckChanged: any health_check field changed (probers restart).
	HealthCheckChanged bool
	// EndpointsAdded, EndpointsRemoved and WeightsChanged are addresses.
	EndpointsAdded, EndpointsRemoved, WeightsChanged []string
}

// Empty reports whether nothing changed.
func (c ClusterChanges) Empty() bool {
	return !c.PolicyChanged && !c.HealthCheckChanged &&
		len(c.EndpointsAdded) == 0 && len(c.EndpointsRemoved) == 0 && len(c.WeightsChanged) == 0
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool {
	return len(c.ListenersAdded) == 0 && len(c.ListenersRemoved) == 0 && len(c.ListenersChanged) == 0 &&
		len(c.ClustersAdded) == 0 && len(c.ClustersRemoved) == 0 && len(c.Clusters) == 0 &&
		!c.AdminChanged && !c.LogChanged && !c.ShutdownChanged
}

// Diff compares two configurations. It runs in time linear in their size.
// A nil configuration is an empty one.
func Diff(old, new *Config) Changes {
	if old == nil {
		old = &Config{}
	}
	if new == nil {
		new = &Config{}
	}
	ch := Changes{
		AdminChanged:    old.Admin != new.Admin,
		LogChanged:      old.Log != new.Log,
		ShutdownChanged: old.Shutdown != new.Shutdown,
	}

	oldListeners := make(map[string]*Listener, len(old.Listeners))
	for i := range old.Listeners {
		oldListeners[old.Listeners[i].Name] = &old.Listeners[i]
	}
	newListeners := make(map[string]bool, len(new.Listeners))
	for i := range new.Listeners {
		l := &new.Listeners[i]
		newListeners[l.Name] = true
		switch prev, ok := oldListeners[l.Name]; {
		case !ok:
			ch.ListenersAdded = append(ch.ListenersAdded, l.Name)
		case !sameListener(prev, l):
			ch.ListenersChanged = append(ch.ListenersChanged, l.Name)
		}
	}
	for i := range old.Listeners {
		if name := old.Listeners[i].Name; !newListeners[name] {
			ch.ListenersRemoved = append(ch.ListenersRemoved, name)
		}
	}

	oldClusters := make(map[string]*Cluster, len(old.Clusters))
	for i := range old.Clusters {
		oldClusters[old.Clusters[i].Name] = &old.Clusters[i]
	}
	newClusters := make(map[string]bool, len(new.Clusters))
	for i := range new.Clusters {
		c := &new.Clusters[i]
		newClusters[c.Name] = true
		prev, ok := oldClusters[c.Name]
		if !ok {
			ch.ClustersAdded = append(ch.ClustersAdded, c.Name)
			continue
		}
		if cc := diffCluster(prev, c); !cc.Empty() {
			ch.Clusters = append(ch.Clusters, cc)
		}
	}
	for i := range old.Clusters {
		if name := old.Clusters[i].Name; !newClusters[name] {
			ch.ClustersRemoved = append(ch.ClustersRemoved, name)
		}
	}
	return ch
}

// sameListener compares everything but the positions.
func sameListener(a, b *Listener) bool {
	x, y := *a, *b
	x.Pos, y.Pos = Pos{}, Pos{}
	x.TLS, y.TLS = nil, nil
	return x == y && a.TLS.Equal(b.TLS)
}

func diffCluster(old, new *Cluster) ClusterChanges {
	cc := ClusterChanges{
		Name:               new.Name,
		PolicyChanged:      old.LBPolicy != new.LBPolicy || old.PanicThreshold != new.PanicThreshold,
		HealthCheckChanged: old.HealthCheck != new.HealthCheck,
	}
	if sameEndpoints(old.Endpoints, new.Endpoints) {
		return cc // the common case on a reload: no map needed
	}
	oldWeights := make(map[string]uint32, len(old.Endpoints))
	for _, ep := range old.Endpoints {
		oldWeights[ep.Address] = ep.Weight
	}
	present := make(map[string]bool, len(new.Endpoints))
	for _, ep := range new.Endpoints {
		present[ep.Address] = true
		switch w, ok := oldWeights[ep.Address]; {
		case !ok:
			cc.EndpointsAdded = append(cc.EndpointsAdded, ep.Address)
		case w != ep.Weight:
			cc.WeightsChanged = append(cc.WeightsChanged, ep.Address)
		}
	}
	for _, ep := range old.Endpoints {
		if !present[ep.Address] {
			cc.EndpointsRemoved = append(cc.EndpointsRemoved, ep.Address)
		}
	}
	return cc
}

// sameEndpoints reports whether two endpoint lists are equal in order,
// ignoring positions.
func sameEndpoints(a, b []Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Address != b[i].Address || a[i].Weight != b[i].Weight {
			return false
		}
	}
	return true
}

// Attrs summarizes the changes as counts for the `config reloaded` log
// record: listeners_added, listeners_removed, listeners_changed,
// clusters_added, clusters_removed, clusters_changed, endpoints_added,
// endpoints_removed, weights_changed, and admin_changed, log_changed,
// shutdown_changed when true. Endpoint counts cover the clusters present in
// both configurations; the endpoints of added or removed clusters come with
// their cluster.
func (c Changes) Attrs() []slog.Attr {
	var epAdded, epRemoved, weights int
	for _, cc := range c.Clusters {
		epAdded += len(cc.EndpointsAdded)
		epRemoved += len(cc.EndpointsRemoved)
		weights += len(cc.WeightsChanged)
	}
	attrs := []slog.Attr{
		slog.Int("listeners_added", len(c.ListenersAdded)),
		slog.Int("listeners_removed", len(c.ListenersRemoved)),
		slog.Int("listeners_changed", len(c.ListenersChanged)),
		slog.Int("clusters_added", len(c.ClustersAdded)),
		slog.Int("clusters_removed", len(c.ClustersRemoved)),
		slog.Int("clusters_changed", len(c.Clusters)),
		slog.Int("endpoints_added", epAdded),
		slog.Int("endpoints_removed", epRemoved),
		slog.Int("weights_changed", weights),
	}
	for _, flag := range []struct {
		key string
		on  bool
	}{{"admin_changed", c.AdminChanged}, {"log_changed", c.LogChanged}, {"shutdown_changed", c.ShutdownChanged}} {
		if flag.on {
			attrs = append(attrs, slog.Bool(flag.key, true))
		}
	}
	return attrs
}

// Attrs summarizes the configuration for the `config loaded` log record:
// file, listeners, clusters, endpoints.
func (c *Config) Attrs() []slog.Attr {
	endpoints := 0
	for i := range c.Clusters {
		endpoints += len(c.Clusters[i].Endpoints)
	}
	return []slog.Attr{
		slog.String("file", c.File),
		slog.Int("listeners", len(c.Listeners)),
		slog.Int("clusters", len(c.Clusters)),
		slog.Int("endpoints", endpoints),
	}
}
