package server

import (
	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/pool"
	"github.com/vigil-proxy/vigil/balancer/route"
	"github.com/vigil-proxy/vigil/internal/config"
)

// routed is a proxy that takes a route table (the grpc listener).
type routed interface {
	SetRoutes(t *route.Table)
}

// routeTable builds the route table of l from the clusters that run. The
// caller holds mu; every cluster l names exists (the configuration was
// validated and its clusters applied first).
func (s *Server) routeTable(l config.Listener) *route.Table {
	var def *balancer.Cluster
	if l.Cluster != "" {
		def = s.clusters[l.Cluster].pool.Cluster()
	}
	if len(l.Routes) == 0 {
		return route.New(nil, def)
	}
	routes := make([]route.Route, len(l.Routes))
	for i, r := range l.Routes {
		routes[i] = route.Route{Name: r.Name, Match: r.Match, Cluster: s.clusters[r.Cluster].pool.Cluster(), Timeout: r.Timeout}
	}
	return route.New(routes, def)
}

// coldPools returns the pools of the clusters t routes to that this
// reload added (added, by name) and that are not warm yet: their
// endpoints are not all probed once (pool.Warm).
func (s *Server) coldPools(t *route.Table, added map[string]bool) []*pool.Pool {
	var cold []*pool.Pool
	t.Clusters(func(c *balancer.Cluster) {
		rt := s.clusters[c.Name()]
		if rt == nil || !added[c.Name()] {
			return
		}
		select {
		case <-rt.pool.Warm():
		default:
			for _, p := range cold {
				if p == rt.pool {
					return
				}
			}
			cold = append(cold, rt.pool)
		}
	})
	return cold
}

// setRoutes gives lr's proxy the route table t, at once when every
// cluster t routes to is warm, else once they are (the contract: a reload
// that routes to a cluster it also creates applies the new routes once
// that cluster is warm; until then the previous routes serve). A later
// reload supersedes a table still waiting. The caller holds mu.
func (s *Server) setRoutes(lr *listenerRT, t *route.Table, added map[string]bool) {
	lr.routesGen++
	gen := lr.routesGen
	cold := s.coldPools(t, added)
	if len(cold) == 0 {
		s.swapRoutes(lr, t)
		return
	}
	s.log.Info("routes wait for new clusters to be warm", "listener", lr.cfg.Name, "clusters", len(cold))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for _, p := range cold {
			select {
			case <-p.Warm():
			case <-s.quit:
				return
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.stopped || lr.routesGen != gen || s.listeners[lr.cfg.Name] != lr {
			return // superseded
		}
		s.swapRoutes(lr, t)
		s.log.Info("routes applied: new clusters are warm", "listener", lr.cfg.Name)
	}()
}

// swapRoutes puts t in force on lr. The caller holds mu.
func (s *Server) swapRoutes(lr *listenerRT, t *route.Table) {
	lr.routes = t
	if p, ok := lr.proxy.(routed); ok {
		p.SetRoutes(t)
		return
	}
	// A tcp listener: its cluster only, for now.
	if d := t.Default(); d != nil {
		lr.proxy.SetCluster(d.Cluster)
	}
}

// routedServices maps every gRPC service name the routes of cfg name to
// the cluster whose health it reports: the first route of the first
// listener that names the service alone (no method, no authority), else
// the first that names it at all. A service named like a cluster is left
// to the cluster.
func routedServices(cfg *config.Config) map[string]string {
	type pick struct {
		cluster string
		alone   bool
	}
	picks := map[string]pick{}
	for _, l := range cfg.Listeners {
		for _, r := range l.Routes {
			svc := r.Match.Service
			if svc == "" {
				continue
			}
			alone := r.Match.Method == "" && r.Match.Authority == ""
			if p, ok := picks[svc]; !ok || alone && !p.alone {
				picks[svc] = pick{r.Cluster, alone}
			}
		}
	}
	out := make(map[string]string, len(picks))
	for svc, p := range picks {
		out[svc] = p.cluster
	}
	for _, c := range cfg.Clusters {
		delete(out, c.Name)
	}
	return out
}
