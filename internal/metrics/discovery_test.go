package metrics

import "testing"

func TestDiscoveryMetrics(t *testing.T) {
	s := newTestStore(t)
	m := New(Options{Store: s.Store})
	s.addCluster("orders", "127.0.0.1:1")
	s.addCluster("billing", "127.0.0.1:2")

	m.DiscoveryStarted("orders", "dns")
	fams := scrape(t, m)
	for _, r := range []string{DiscoveryChanged, DiscoveryUnchanged, DiscoveryFailed} {
		mustSample(t, fams, 0, "vigil_discovery_updates_total", "cluster", "orders", "source", "dns", "result", r)
	}
	mustSample(t, fams, 0, "vigil_discovery_endpoints", "cluster", "orders", "source", "dns")

	m.DiscoveryUpdate("orders", "dns", DiscoveryChanged, 3)
	m.DiscoveryUpdate("orders", "dns", DiscoveryUnchanged, 0)
	m.DiscoveryUpdate("orders", "dns", DiscoveryUnchanged, 0)
	m.DiscoveryUpdate("orders", "dns", DiscoveryFailed, 0) // the last good set stays
	m.DiscoveryUpdate("billing", "kubernetes", DiscoveryChanged, 7)
	fams = scrape(t, m)
	mustSample(t, fams, 1, "vigil_discovery_updates_total", "cluster", "orders", "source", "dns", "result", DiscoveryChanged)
	mustSample(t, fams, 2, "vigil_discovery_updates_total", "cluster", "orders", "source", "dns", "result", DiscoveryUnchanged)
	mustSample(t, fams, 1, "vigil_discovery_updates_total", "cluster", "orders", "source", "dns", "result", DiscoveryFailed)
	mustSample(t, fams, 3, "vigil_discovery_endpoints", "cluster", "orders", "source", "dns")
	mustSample(t, fams, 7, "vigil_discovery_endpoints", "cluster", "billing", "source", "kubernetes")

	// A reload replaced orders' dns discovery; billing left the configuration.
	m.DiscoveryStopped("orders", "dns")
	s.removeCluster("billing")
	fams = scrape(t, m)
	mustNotHave(t, fams, "vigil_discovery_endpoints", "cluster", "orders", "source", "dns")
	mustNotHave(t, fams, "vigil_discovery_updates_total", "cluster", "orders", "source", "dns", "result", DiscoveryChanged)
	mustNotHave(t, fams, "vigil_discovery_endpoints", "cluster", "billing", "source", "kubernetes")
}
