package server

import (
	"log/slog"
	"sync"
	"time"

	"github.com/vigil-proxy/vigil/balancer/pool"
	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/discovery"
	"github.com/vigil-proxy/vigil/internal/metrics"
)

// clusterDiscovery is one cluster's discovery: a Watcher whose sets it
// hands the cluster's pool as that source's endpoints, and whose failures
// it logs and counts. Its handler runs on the Watcher's goroutine and never
// takes Server.mu.
type clusterDiscovery struct {
	spec    discovery.Spec
	source  pool.Source
	watcher *discovery.Watcher
	// first is closed after the first outcome, a set or a failure.
	first     chan struct{}
	firstOnce sync.Once
	// replaces is the source of the discovery this one replaced with a
	// reload, whose endpoints leave once this one has given its first set
	// (an endpoint in both keeps its health); "" once done, or if none.
	replaces pool.Source
}

func sourceOf(k discovery.Kind) pool.Source {
	switch k {
	case discovery.KindDNS:
		return pool.SourceDNS
	case discovery.KindSRV:
		return pool.SourceSRV
	}
	return pool.SourceKubernetes
}

// syncDiscovery makes rt's discovery what spec (nil: none) says. An
// unchanged spec leaves the Watcher running; a changed one starts a new
// Watcher, whose first set replaces the old one's. The caller holds s.mu.
func (s *Server) syncDiscovery(rt *clusterRT, spec *discovery.Spec) {
	old := rt.disc
	if spec == nil {
		if old != nil {
			s.stopDiscovery(rt)
		}
		return
	}
	if old != nil && old.spec == *spec {
		return
	}
	d := &clusterDiscovery{spec: *spec, source: sourceOf(spec.Kind), first: make(chan struct{})}
	if old != nil {
		old.watcher.Stop()
		if old.source != d.source {
			d.replaces = old.source
		}
		// The old one's series go; a same-source one starts again at 0.
		s.metrics.m.DiscoveryStopped(rt.name, string(old.source))
	}
	s.metrics.m.DiscoveryStarted(rt.name, string(d.source))
	s.log.Debug("discovery started", "cluster", rt.name, "source", string(d.source), "target", spec.String())
	d.watcher = discovery.Start(*spec, s.discoveryHandler(rt.name, rt.pool, d))
	rt.disc = d
}

// stopDiscovery stops rt's discovery and removes what it found: those
// endpoints drain. The caller holds s.mu.
func (s *Server) stopDiscovery(rt *clusterRT) {
	d := rt.disc
	if d == nil {
		return
	}
	d.watcher.Stop()
	rt.pool.SetDiscovered(d.source, nil)
	if d.replaces != "" {
		rt.pool.SetDiscovered(d.replaces, nil)
	}
	s.metrics.m.DiscoveryStopped(rt.name, string(d.source))
	s.log.Debug("discovery stopped", "cluster", rt.name, "source", string(d.source))
	rt.disc = nil
}

// discoveryHandler turns a Watcher's events into the pool's discovered
// endpoints, `discovery failed` / `discovery recovered` records of the
// eviction log, and metrics. An Unchanged lookup costs a counter and
// nothing else.
func (s *Server) discoveryHandler(cluster string, p *pool.Pool, d *clusterDiscovery) discovery.Handler {
	source := string(d.source)
	return func(ev discovery.Event) {
		switch ev.Kind {
		case discovery.Updated:
			// Candidates only: a Kubernetes endpoint that is serving and
			// terminating leaves the set, so the pool drains it (no new
			// traffic, in-flight work finishes).
			eps := make([]pool.Endpoint, 0, len(ev.Endpoints))
			for _, e := range ev.Endpoints {
				if !e.Draining {
					eps = append(eps, pool.Endpoint{Address: e.Address, Weight: e.Weight})
				}
			}
			p.SetDiscovered(d.source, eps)
			if d.replaces != "" {
				p.SetDiscovered(d.replaces, nil)
				d.replaces = ""
			}
			s.metrics.m.DiscoveryUpdate(cluster, source, metrics.DiscoveryChanged, len(eps))
		case discovery.Unchanged:
			s.metrics.m.DiscoveryUpdate(cluster, source, metrics.DiscoveryUnchanged, 0)
		case discovery.Failed:
			s.metrics.m.DiscoveryUpdate(cluster, source, metrics.DiscoveryFailed, 0)
			if ev.First {
				s.events.LogAttrs(s.ctx, slog.LevelWarn, "discovery failed",
					slog.String("cluster", cluster), slog.String("source", source),
					slog.String("target", d.spec.String()), slog.String("error", ev.Err.Error()),
					slog.String("kept", "the last endpoints found keep serving"))
			}
		case discovery.Recovered:
			s.events.LogAttrs(s.ctx, slog.LevelInfo, "discovery recovered",
				slog.String("cluster", cluster), slog.String("source", source),
				slog.String("target", d.spec.String()), slog.Int("failures", ev.Failures))
		}
		if ev.Kind != discovery.Recovered {
			d.firstOnce.Do(func() { close(d.first) })
		}
	}
}

// firstDiscoveryWait bounds how long readiness waits for a discovery's
// first outcome; a DNS lookup fails well within it, an API server that
// does not answer may not.
const firstDiscoveryWait = 15 * time.Second

// waitDiscovered waits, for the readiness of the first configuration, until
// d has had its first outcome and every endpoint it found has had its first
// probe: the first round of probes includes the discovered endpoints. It
// returns false if the server stops first.
func (s *Server) waitDiscovered(p *pool.Pool, d *clusterDiscovery) bool {
	timer := time.NewTimer(firstDiscoveryWait)
	defer timer.Stop()
	select {
	case <-d.first:
	case <-timer.C:
		return true // no answer yet: ready without; the endpoints join when found
	case <-s.quit:
		return false
	}
	// The pool tells when its first plan was probed; for endpoints added
	// after it, look (at start-up only, for the seconds a probe takes).
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		probed := true
		for _, e := range p.Endpoints() {
			if e.Status.Health == checker.Pending && e.Status.Failures == 0 {
				probed = false
				break
			}
		}
		if probed {
			return true
		}
		select {
		case <-tick.C:
		case <-s.quit:
			return false
		}
	}
}
