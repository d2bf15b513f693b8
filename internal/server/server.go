package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	// Every load-balancing policy the configuration can name.
	_ "github.com/vigil-proxy/vigil/balancer/policies"
	"github.com/vigil-proxy/vigil/balancer/pool"
	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/internal/accesslog"
	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/logging"
	"github.com/vigil-proxy/vigil/internal/metrics"
	"github.com/vigil-proxy/vigil/internal/state"
	"github.com/vigil-proxy/vigil/internal/tlsconf"
)

// Options are what a Server is built with.
type Options struct {
	// Logs is the root of the loggers; a reload changes its format and
	// level. Logger is derived from it; the eviction log is written
	// through Logger's handler too, and also appended to Store's events.
	Logs   *logging.Switch
	Logger *slog.Logger
	Store  *state.Store
	// Metrics is where the server's metrics go; nil makes a registry of
	// its own (served by the admin API all the same).
	Metrics *metrics.Metrics
	// Version is reported in vigil_build_info.
	Version string
	// Parser parses the files ReloadFile reads; pass the one that loaded
	// the initial configuration, so that the first reload already
	// re-parses only what changed. Nil makes one of its own.
	Parser *config.Parser
}

// Server runs one vigil process's listeners, clusters and health checks.
type Server struct {
	log  *slog.Logger
	logs *logging.Switch
	// events writes the eviction log: the pools' records (LogSink) and the
	// configuration's, each one also an event of /events.
	events      *slog.Logger
	evictionLog event.Sink
	store       *state.Store
	health      *health.Server
	metrics     *metricsHooks
	// metricsRegistry is what /metrics serves.
	metricsRegistry *metrics.Metrics

	// ctx is for log calls that need one; it is never cancelled.
	ctx context.Context
	// reloadMu serializes ReloadFile so that each logged difference is
	// against the configuration it replaced.
	reloadMu sync.Mutex
	// parser parses the files ReloadFile reads, re-parsing only the items
	// that changed since the last one.
	parser *config.Parser

	// mu serializes Start, Reload and Shutdown, and guards what they
	// change.
	mu        sync.Mutex
	cfg       *config.Config
	clusters  map[string]*clusterRT
	listeners map[string]*listenerRT
	acceptors map[string]*acceptor
	admin     *adminRT
	stopped   bool
	// accessLogs are the open access log sinks by path.
	accessLogs map[string]*accesslog.Sink

	// healthMu orders the proxy's own health changes with the start of
	// shutdown, after which nothing may turn SERVING again.
	healthMu sync.Mutex
	stopping bool
	ready    bool
	readyCh  chan struct{}
	// serving is whether each cluster has a healthy endpoint, as its pool
	// last said; services maps each routed gRPC service name to the
	// cluster whose health it reports (routedServices).
	serving  map[string]bool
	services map[string]string

	quit chan struct{}
	// wg counts the goroutines the server owns: the readiness wait, the
	// retirement of removed clusters, listeners and admin servers being
	// retired.
	wg sync.WaitGroup

	// tls keeps the listeners' certificates current; its watch runs from
	// Start until stopTLS, at the end of Shutdown.
	tls     *tlsconf.Store
	stopTLS func()
}

// New returns a server that runs nothing yet.
func New(opts Options) *Server {
	m := opts.Metrics
	if m == nil {
		m = metrics.New(metrics.Options{Store: opts.Store, Version: opts.Version})
	}
	events := slog.New(logging.EventLog(opts.Logger.Handler(), opts.Store))
	s := &Server{
		ctx:             context.Background(),
		log:             opts.Logger,
		logs:            opts.Logs,
		events:          events,
		evictionLog:     pool.LogSink(events),
		store:           opts.Store,
		health:          health.NewServer(),
		metrics:         &metricsHooks{m: m},
		metricsRegistry: m,
		clusters:        map[string]*clusterRT{},
		listeners:       map[string]*listenerRT{},
		acceptors:       map[string]*acceptor{},
		readyCh:         make(chan struct{}),
		serving:         map[string]bool{},
		services:        map[string]string{},
		quit:            make(chan struct{}),
		parser:          opts.Parser,
	}
	if s.parser == nil {
		s.parser = new(config.Parser)
	}
	s.tls = tlsconf.New(tlsconf.Options{Logger: s.log})
	m.SetWeights(s.effectiveWeight)
	// grpc-go's health server starts with "" SERVING; vigil is not ready
	// before its first round of probes.
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	return s
}

// Health is the proxy's own health service, served on every grpc listener.
func (s *Server) Health() *health.Server { return s.health }

// Ready is closed once the proxy is ready: the first round of probes is
// done.
func (s *Server) Ready() <-chan struct{} { return s.readyCh }

// Serving reports whether the proxy's own service "" is SERVING: ready and
// not shutting down.
func (s *Server) Serving() bool {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	return s.ready && !s.stopping
}

// Config returns the configuration in force.
func (s *Server) Config() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Start applies the first configuration: binds every listener (an address
// that cannot be bound is an error and nothing keeps running) and starts
// probing every endpoint. The proxy becomes ready when every cluster has
// had its first round of probes.
func (s *Server) Start(cfg *config.Config) error {
	s.stopTLS = s.tls.Start()
	if _, err := s.apply(cfg, false); err != nil {
		s.Shutdown(context.Background())
		return err
	}
	s.mu.Lock()
	pools := make([]*pool.Pool, 0, len(s.clusters))
	type discovered struct {
		p *pool.Pool
		d *clusterDiscovery
	}
	var discoveries []discovered
	for _, rt := range s.clusters {
		pools = append(pools, rt.pool)
		if rt.disc != nil {
			discoveries = append(discoveries, discovered{rt.pool, rt.disc})
		}
	}
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for _, p := range pools {
			select {
			case <-p.Ready():
			case <-s.quit:
				return
			}
		}
		for _, dp := range discoveries {
			if !s.waitDiscovered(dp.p, dp.d) {
				return
			}
		}
		s.markReady()
	}()
	return nil
}

// Reload applies cfg as a difference against what runs. When it fails
// (a new listener address cannot be bound), nothing has changed.
func (s *Server) Reload(cfg *config.Config) error {
	_, err := s.apply(cfg, true)
	return err
}

// apply makes what runs match cfg and returns what that changed, in
// order: bind new sockets (the only step that can fail), apply each
// cluster's spec to its pool, then start, swap and stop listeners (and
// give them their route tables), then drain the clusters left out.
func (s *Server) apply(cfg *config.Config, reload bool) (reloadPlan, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return reloadPlan{}, errors.New("server is shutting down")
	}

	if err := s.checkTLSFiles(cfg); err != nil {
		return reloadPlan{}, err
	}
	sinks, err := s.openAccessLogs(cfg)
	if err != nil {
		return reloadPlan{}, err
	}
	bound, err := s.bind(cfg)
	if err != nil {
		s.closeNewAccessLogs(sinks)
		return reloadPlan{}, err
	}
	tlsSrcs, err := s.prepareTLS(cfg)
	if err != nil {
		for _, a := range bound {
			a.close()
		}
		s.closeNewAccessLogs(sinks)
		return reloadPlan{}, err
	}
	clusterTLS, err := s.prepareClusterTLS(cfg)
	if err != nil {
		for _, a := range bound {
			a.close()
		}
		for _, src := range tlsSrcs {
			src.Close()
		}
		s.closeNewAccessLogs(sinks)
		return reloadPlan{}, err
	}
	adminLn, err := s.bindAdmin(cfg)
	if err != nil {
		for _, a := range bound {
			a.close()
		}
		for _, src := range tlsSrcs {
			src.Close()
		}
		s.closeNewAccessLogs(sinks)
		for _, c := range clusterTLS {
			c.Close()
		}
		return reloadPlan{}, config.ErrorList{err.(*config.Error)}
	}

	plan := reloadPlan{
		adminChanged:    s.cfg != nil && s.cfg.Admin != cfg.Admin,
		logChanged:      s.cfg != nil && s.cfg.Log != cfg.Log,
		shutdownChanged: s.cfg != nil && s.cfg.Shutdown != cfg.Shutdown,
	}
	names := make(map[string]bool, len(cfg.Clusters))
	addedClusters := map[string]bool{}
	for _, c := range cfg.Clusters {
		names[c.Name] = true
		rt := s.clusters[c.Name]
		added := rt == nil || rt.removed
		addedClusters[c.Name] = added
		switch {
		case rt == nil:
			rt = s.newCluster(c.Name, !reload)
			s.clusters[c.Name] = rt
		case rt.removed:
			rt.removed = false
			rt.stopRetire()
		}
		rt.cfg = c
		rt.setTLS(clusterTLS[c.Name], c.TLS != nil)
		s.metrics.m.TLSClientCertificates(c.Name, rt.tls)
		plan.cluster(added, rt.pool.Apply(specOf(c, cfg.Shutdown.Timeout, rt.tls)))
		s.syncDiscovery(rt, c.Discovery)
	}

	if err := s.store.Update(func(w state.Writer) error { return s.writeListeners(w, cfg, bound) }); err != nil {
		// The store refuses only what the schema cannot hold: a bug.
		s.log.Error("record listeners", "err", err)
	}
	s.applyListeners(cfg, bound, tlsSrcs, sinks, addedClusters, &plan)
	s.swapAccessLogs(sinks, cfg.Shutdown.Timeout)
	s.setRoutedServices(routedServices(cfg))

	// Clusters left out go last, once no listener's new table routes to
	// them: an RPC routed by the previous table until then still finds
	// their endpoints.
	for name, rt := range s.clusters {
		if names[name] || rt.removed {
			continue
		}
		// Its endpoints drain; the cluster is retired once they have.
		s.stopDiscovery(rt)
		left := rt.cfg
		left.Endpoints = nil
		rt.pool.Apply(specOf(left, cfg.Shutdown.Timeout, rt.tls))
		rt.removed = true
		s.metrics.m.TLSClientCertificates(name, nil)
		plan.clustersRemoved++
		s.retireWhenDrained(rt)
	}
	s.applyAdmin(cfg, adminLn)
	if s.logs != nil {
		s.logs.Set(cfg.Log.Format, logging.ParseLevel(cfg.Log.Level))
	}
	s.cfg = cfg
	return plan, nil
}

// bind opens the sockets cfg needs that are not open yet. On failure it
// closes what it opened and returns an error that points into the file.
func (s *Server) bind(cfg *config.Config) (map[string]*acceptor, error) {
	bound := map[string]*acceptor{}
	var errs config.ErrorList
	for i, l := range cfg.Listeners {
		key := acceptorKey(l)
		if s.acceptors[key] != nil || bound[key] != nil {
			continue
		}
		a, err := listen(l.Address, s.log)
		if err != nil {
			errs = append(errs, cfg.Errorf(l.Pos, fmt.Sprintf("listeners[%d].address", i), "%w", err))
			continue
		}
		bound[key] = a
	}
	if len(errs) > 0 {
		for _, a := range bound {
			a.close()
		}
		return nil, errs
	}
	return bound, nil
}

func (s *Server) acceptorFor(l config.Listener, bound map[string]*acceptor) *acceptor {
	if a := bound[acceptorKey(l)]; a != nil {
		return a
	}
	return s.acceptors[acceptorKey(l)]
}

func (s *Server) writeListeners(w state.Writer, cfg *config.Config, bound map[string]*acceptor) error {
	old, err := w.Listeners(nil)
	if err != nil {
		return err
	}
	for _, l := range old {
		if !slices.ContainsFunc(cfg.Listeners, func(n config.Listener) bool { return n.Name == l.Name }) {
			if err := w.DeleteListenerByName(l.Name); err != nil {
				return err
			}
		}
	}
	for _, l := range cfg.Listeners {
		row := &state.Listener{Listener: l, Bound: s.acceptorFor(l, bound).Addr().String()}
		if err := w.UpsertListener(row); err != nil {
			return err
		}
	}
	return nil
}

// applyListeners starts, swaps and retires listeners, and records what
// changed in plan; tlsSrcs are the new TLS configurations of listeners
// whose tls section is new or changed. The caller holds mu.
func (s *Server) applyListeners(cfg *config.Config, bound map[string]*acceptor, tlsSrcs map[string]*tlsconf.Server,
	sinks map[string]*accesslog.Sink, added map[string]bool, plan *reloadPlan) {
	for k, a := range bound {
		s.acceptors[k] = a
	}
	keep := map[string]bool{}
	for _, l := range cfg.Listeners {
		acc := s.acceptorFor(l, bound)
		keep[acceptorKey(l)] = true
		routes := s.routeTable(l)
		old := s.listeners[l.Name]
		src := tlsSrcs[l.Name]
		al := s.accessLogger(cfg, l, sinks)
		switch {
		case old == nil:
			plan.listenersAdded++
		case !old.cfg.Same(l):
			plan.listenersChanged++
		}
		if old != nil && old.acc == acc && sameProxy(old.cfg, l) {
			if old.cfg.Cluster != l.Cluster || !old.cfg.SameRoutes(l) {
				s.setRoutes(old, routes, added)
			}
			if old.cfg.Cluster != l.Cluster {
				s.log.Info("listener moved", "listener", l.Name, "cluster", l.Cluster, "from", old.cfg.Cluster)
			}
			old.proxy.SetAccessLog(al)
			if !old.cfg.AccessLog.Same(l.AccessLog) {
				s.log.Info("listener access log changed", "listener", l.Name, "path", l.AccessLog.Path, "format", string(l.AccessLog.Format))
			}
			if !old.cfg.SameRoutes(l) {
				s.log.Info("listener routes changed", "listener", l.Name, "routes", len(l.Routes))
			}
			if src != nil {
				old.tls.update(s, l, src)
				s.log.Info("listener tls updated", "listener", l.Name, "certificates", len(l.TLS.Certificates),
					"mtls", l.TLS.ClientCAFile != "", "min_version", string(l.TLS.MinVersion))
			}
			old.cfg = l
			continue
		}
		if l.TLS != nil && src == nil {
			// Same tls section, another proxy (the protocol or a limit
			// changed): the new proxy takes the old one's configuration,
			// still being kept current.
			src = old.tls.src
			old.tls.src = nil
		}
		s.listeners[l.Name] = s.startListener(l, acc, routes, src, al)
		if l.TLS == nil {
			s.metrics.m.TLSCertificates(l.Name, nil)
		}
		if old != nil {
			s.retireListener(old, cfg.Shutdown.Timeout)
		}
	}
	for name, lr := range s.listeners {
		if !slices.ContainsFunc(cfg.Listeners, func(l config.Listener) bool { return l.Name == name }) {
			delete(s.listeners, name)
			plan.listenersRemoved++
			s.retireListener(lr, cfg.Shutdown.Timeout)
			s.metrics.m.TLSCertificates(name, nil)
			s.log.Info("listener removed", "listener", name, "address", lr.acc.Addr().String())
		}
	}
	for k, a := range s.acceptors {
		if !keep[k] {
			a.close()
			delete(s.acceptors, k)
		}
	}
}

// retireListener stops lr in the background: its connections in flight get
// up to timeout to finish.
func (s *Server) retireListener(lr *listenerRT, timeout time.Duration) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		lr.stop(ctx)
	}()
}

// markReady makes the proxy ready: the first round of probes is done.
func (s *Server) markReady() {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	if s.ready {
		return
	}
	s.ready = true
	close(s.readyCh)
	if !s.stopping {
		s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		s.log.Info("ready: first round of health checks done")
	}
}

// setClusterServing publishes whether a cluster has a healthy endpoint as
// the proxy's own health service named after the cluster, and named after
// every gRPC service routed to it.
func (s *Server) setClusterServing(name string, serving bool) {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	s.serving[name] = serving
	if s.stopping {
		return
	}
	s.health.SetServingStatus(name, servingStatus(serving))
	for svc, cluster := range s.services {
		if cluster == name {
			s.health.SetServingStatus(svc, servingStatus(serving))
		}
	}
}

// setRoutedServices makes the proxy's own health answer for each routed
// service (name -> cluster) as its cluster does; a service no longer
// routed turns NOT_SERVING (the health server cannot forget a name).
func (s *Server) setRoutedServices(services map[string]string) {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	old := s.services
	s.services = services
	if s.stopping {
		return
	}
	for svc := range old {
		if _, ok := services[svc]; !ok {
			s.health.SetServingStatus(svc, healthpb.HealthCheckResponse_NOT_SERVING)
		}
	}
	for svc, cluster := range services {
		if c, ok := old[svc]; !ok || c != cluster {
			s.health.SetServingStatus(svc, servingStatus(s.serving[cluster]))
		}
	}
}

func servingStatus(serving bool) healthpb.HealthCheckResponse_ServingStatus {
	if serving {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}

// Shutdown stops the proxy in the contract's order: its own health turns
// NOT_SERVING at once, listeners keep accepting for drain_delay so that load
// balancers in front notice, then stop accepting; work in flight gets until
// shutdown.timeout (or ctx, whichever ends first) to finish and is cut after
// that; then probers stop and every connection closes.
func (s *Server) Shutdown(ctx context.Context) {
	s.healthMu.Lock()
	s.stopping = true
	// Shutdown turns every service NOT_SERVING and ignores later updates.
	s.health.Shutdown()
	s.healthMu.Unlock()

	// Take what runs out of the server's hands first, so that nothing
	// waited for below (the reaper, a drain) can be stuck waiting for mu.
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	listeners, acceptors, clusters, adm := s.listeners, s.acceptors, s.clusters, s.admin
	s.listeners, s.acceptors, s.clusters, s.admin = map[string]*listenerRT{}, map[string]*acceptor{}, map[string]*clusterRT{}, nil
	var delay, timeout time.Duration
	if s.cfg != nil {
		delay, timeout = s.cfg.Shutdown.DrainDelay, s.cfg.Shutdown.Timeout
	}
	s.mu.Unlock()

	if delay > 0 {
		s.log.Info("shutting down: draining", "drain_delay", delay.String())
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
	}
	s.log.Info("shutting down: no longer accepting", "timeout", timeout.String())
	ctx, cancel := context.WithTimeout(ctx, max(timeout, time.Millisecond))
	defer cancel()
	var wg sync.WaitGroup
	for _, lr := range listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lr.stop(ctx)
		}()
	}
	for _, a := range acceptors {
		a.close()
	}
	wg.Wait()
	// The listeners' last records are in: write them out.
	s.mu.Lock()
	sinks := s.accessLogs
	s.accessLogs = nil
	s.mu.Unlock()
	for _, sink := range sinks {
		sink.Close()
	}

	// The admin server goes last, so that /ready answers 503 for as long
	// as the proxy drains.
	if adm != nil {
		s.stopAdmin(adm)
	}
	close(s.quit)
	s.wg.Wait()
	for _, rt := range clusters {
		if rt.disc != nil {
			rt.disc.watcher.Stop()
		}
		rt.pool.Close()
	}
	if s.stopTLS != nil {
		s.stopTLS()
	}
}
