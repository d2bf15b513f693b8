package server

import (
	"context"
	"time"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/maglev"
	"github.com/vigil-proxy/vigil/balancer/pool"
	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/balancer/ringhash"
	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/tlsconf"
)

// clusterRT is one cluster the server runs: its pool, which owns the
// cluster's endpoints and their health, and whether the configuration
// still has it. Its fields are guarded by Server.mu.
type clusterRT struct {
	name string
	pool *pool.Pool
	cfg  config.Cluster // as last applied
	// removed is set when the cluster left the configuration; it is
	// retired once its endpoints have drained, unless a reload brings it
	// back first (which calls stopRetire).
	removed    bool
	stopRetire context.CancelFunc
	// disc is the cluster's discovery, nil without one.
	disc *clusterDiscovery
	// tls secures the connections to the endpoints, nil without tls.
	tls *tlsconf.Client
}

// setTLS makes c the cluster's TLS (nil: plaintext), closing the one it
// replaces; a nil c with tls still configured keeps it (unchanged).
func (rt *clusterRT) setTLS(c *tlsconf.Client, on bool) {
	switch {
	case !on:
		if rt.tls != nil {
			rt.tls.Close()
		}
		rt.tls = nil
	case c != nil:
		if rt.tls != nil {
			rt.tls.Close()
		}
		rt.tls = c
	}
}

// newCluster starts the pool of a cluster. Its events go to the state
// store, the metrics, the proxy's own health service and the eviction
// log, in that order: whoever reads the eviction log finds the change
// already recorded everywhere else.
func (s *Server) newCluster(name string, startup bool) *clusterRT {
	return &clusterRT{name: name, pool: pool.New(name, pool.Options{
		Sinks:   []event.Sink{s.store, s.metrics.m, event.SinkFunc(s.ownHealth), s.evictionLog},
		Logger:  s.log,
		OnProbe: func(address string, r checker.Result) { s.metrics.probe(name, address, r) },
		Startup: startup,
	})}
}

// specOf is what a cluster of the configuration asks of its pool.
func specOf(c config.Cluster, drainTimeout time.Duration, t *tlsconf.Client) pool.Spec {
	eps := make([]pool.Endpoint, len(c.Endpoints))
	for i, e := range c.Endpoints {
		eps[i] = pool.Endpoint{Address: e.Address, Weight: e.Weight}
	}
	return pool.Spec{
		Policy:         policyFor(c),
		PanicThreshold: c.PanicThreshold,
		HealthCheck:    c.HealthCheck,
		Endpoints:      eps,
		DrainTimeout:   drainTimeout,
		Outlier:        c.Outlier,
		SlowStart:      c.SlowStart,
		TLS:            clusterTLS(t),
		LoadReports:    c.LoadReports,
	}
}

// clusterTLS is t as the pool's interface: nil stays a nil interface.
func clusterTLS(t *tlsconf.Client) checker.TLS {
	if t == nil {
		return nil
	}
	return t
}

// policyFor is the policy of a cluster: the registered one of its name,
// with the cluster's own settings for those that have some.
func policyFor(c config.Cluster) balancer.Policy {
	switch {
	case c.Hash == nil:
	case c.LBPolicy == config.RingHash:
		return ringhash.Policy{Header: c.Hash.Header, RingSize: c.Hash.RingSize}
	case c.LBPolicy == config.Maglev:
		return maglev.Policy{Header: c.Hash.Header}
	}
	if p, ok := balancer.PolicyByName(string(c.LBPolicy)); ok {
		return p
	}
	// The config package only lets registered names through.
	p, _ := balancer.PolicyByName(string(config.RoundRobin))
	return p
}

// ownHealth publishes whether a cluster has a healthy endpoint as the
// proxy's own health service named after the cluster (an event.Sink).
func (s *Server) ownHealth(events []event.Event) {
	for i := range events {
		switch ev := &events[i]; ev.Kind {
		case event.ClusterServing:
			s.setClusterServing(ev.Cluster, ev.Serving)
		case event.ClusterRemoved:
			s.setClusterServing(ev.Cluster, false)
		}
	}
}

// retireWhenDrained waits, in a goroutine the server owns, until the
// removed cluster rt has no endpoint left, then closes its pool, unless a
// reload brought it back meanwhile. The caller holds s.mu.
func (s *Server) retireWhenDrained(rt *clusterRT) {
	ctx, cancel := context.WithCancel(context.Background())
	rt.stopRetire = cancel
	empty := rt.pool.Empty()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		select {
		case <-empty:
		case <-ctx.Done():
			return // back in the configuration
		case <-s.quit:
			return // Shutdown closes every pool
		}
		s.mu.Lock()
		if s.stopped || s.clusters[rt.name] != rt || !rt.removed {
			s.mu.Unlock()
			return
		}
		delete(s.clusters, rt.name)
		s.mu.Unlock()
		rt.pool.Close()
		if rt.tls != nil {
			rt.tls.Close()
		}
		s.log.Debug("cluster retired", "cluster", rt.name)
	}()
}
