package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	// Every load-balancing policy the configuration can name.
	_ "github.com/vigil-proxy/vigil/balancer/policies"
	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/logging"
	"github.com/vigil-proxy/vigil/internal/metrics"
	"github.com/vigil-proxy/vigil/internal/state"
	"github.com/vigil-proxy/vigil/internal/tlsconf"
)

// Options are what a Server is built with.
type Options struct {
	// Logs is the root of the loggers; a reload changes its format and
	// level. Logger is derived from it (with the event tee in front).
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
	log     *slog.Logger
	logs    *logging.Switch
	store   *state.Store
	health  *health.Server
	metrics *metricsHooks
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

	// healthMu orders the proxy's own health changes with the start of
	// shutdown, after which nothing may turn SERVING again.
	healthMu sync.Mutex
	stopping bool
	ready    bool
	// unready counts the first configuration's clusters whose first round
	// of probes is not done yet.
	unready atomic.Int64
	readyCh chan struct{}

	retire chan *clusterRT
	quit   chan struct{}
	wg     sync.WaitGroup // the reaper and listeners being retired

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
	s := &Server{
		ctx:             context.Background(),
		log:             opts.Logger,
		logs:            opts.Logs,
		store:           opts.Store,
		health:          health.NewServer(),
		metrics:         &metricsHooks{m: m},
		metricsRegistry: m,
		clusters:        map[string]*clusterRT{},
		listeners:       map[string]*listenerRT{},
		acceptors:       map[string]*acceptor{},
		readyCh:         make(chan struct{}),
		retire:          make(chan *clusterRT),
		quit:            make(chan struct{}),
		parser:          opts.Parser,
	}
	if s.parser == nil {
		s.parser = new(config.Parser)
	}
	s.tls = tlsconf.New(tlsconf.Options{Logger: s.log})
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
// probing every endpoint.
func (s *Server) Start(cfg *config.Config) error {
	s.unready.Store(int64(len(cfg.Clusters)))
	if len(cfg.Clusters) == 0 {
		s.clusterReady()
	}
	s.wg.Add(1)
	go s.reap()
	s.stopTLS = s.tls.Start()
	if err := s.apply(cfg, false); err != nil {
		s.Shutdown(context.Background())
		return err
	}
	return nil
}

// Reload applies cfg as a difference against what runs. When it fails
// (a new listener address cannot be bound), nothing has changed.
func (s *Server) Reload(cfg *config.Config) error {
	return s.apply(cfg, true)
}

// apply makes what runs match cfg, in order: bind new sockets (the only
// step that can fail), record the new state in one store transaction, then
// start and stop probers, drains and listeners.
func (s *Server) apply(cfg *config.Config, reload bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("server is shutting down")
	}

	if err := s.checkTLSFiles(cfg); err != nil {
		return err
	}
	bound, err := s.bind(cfg)
	if err != nil {
		return err
	}
	tlsSrcs, err := s.prepareTLS(cfg)
	if err != nil {
		for _, a := range bound {
			a.close()
		}
		return err
	}
	adminLn, err := s.bindAdmin(cfg)
	if err != nil {
		for _, a := range bound {
			a.close()
		}
		for _, src := range tlsSrcs {
			src.Close()
		}
		return config.ErrorList{err.(*config.Error)}
	}

	type step struct {
		rt   *clusterRT
		plan clusterPlan
	}
	var steps []step
	names := make(map[string]bool, len(cfg.Clusters))
	for _, c := range cfg.Clusters {
		names[c.Name] = true
		rt := s.clusters[c.Name]
		switch {
		case rt == nil:
			rt = newClusterRT(s, c, !reload)
			s.clusters[c.Name] = rt
		case rt.keep(c):
			continue
		}
		steps = append(steps, step{rt, rt.plan(c)})
	}
	var gone []step
	for name, rt := range s.clusters {
		if !names[name] {
			left := rt.cfg
			left.Endpoints = nil
			gone = append(gone, step{rt, rt.plan(left)})
		}
	}

	now := time.Now()
	err = s.store.Update(func(w state.Writer) error {
		for _, st := range slices.Concat(steps, gone) {
			if err := st.rt.write(w, st.plan, now); err != nil {
				return err
			}
		}
		return s.writeListeners(w, cfg, bound)
	})
	if err != nil {
		for _, a := range bound {
			a.close()
		}
		for _, src := range tlsSrcs {
			src.Close()
		}
		if adminLn != nil {
			_ = adminLn.Close()
		}
		return fmt.Errorf("record configuration: %w", err)
	}

	for _, st := range steps {
		st.rt.commit(st.plan, reload, cfg.Shutdown.Timeout)
	}
	for _, st := range gone {
		st.rt.commit(st.plan, reload, cfg.Shutdown.Timeout)
		st.rt.markRemoved()
	}

	s.applyListeners(cfg, bound, tlsSrcs)
	s.applyAdmin(cfg, adminLn)
	if s.logs != nil {
		s.logs.Set(cfg.Log.Format, logging.ParseLevel(cfg.Log.Level))
	}
	s.cfg = cfg
	return nil
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

// applyListeners starts, swaps and retires listeners; tlsSrcs are the new
// TLS configurations of listeners whose tls section is new or changed. The
// caller holds mu.
func (s *Server) applyListeners(cfg *config.Config, bound map[string]*acceptor, tlsSrcs map[string]*tlsconf.Server) {
	for k, a := range bound {
		s.acceptors[k] = a
	}
	keep := map[string]bool{}
	for _, l := range cfg.Listeners {
		acc := s.acceptorFor(l, bound)
		keep[acceptorKey(l)] = true
		bal := s.clusters[l.Cluster].bal
		old := s.listeners[l.Name]
		src := tlsSrcs[l.Name]
		if old != nil && old.acc == acc && sameProxy(old.cfg, l) {
			if old.cfg.Cluster != l.Cluster {
				old.proxy.SetCluster(bal)
				s.log.Info("listener moved", "listener", l.Name, "cluster", l.Cluster, "from", old.cfg.Cluster)
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
		s.listeners[l.Name] = s.startListener(l, acc, bal, src)
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

// retireLater hands a removed, fully drained cluster to the reaper, which
// retires it unless a reload has brought it back.
func (s *Server) retireLater(rt *clusterRT) {
	select {
	case s.retire <- rt:
	case <-s.quit:
	}
}

// reap retires removed clusters once drained. It runs outside every cluster
// so that closing a cluster can wait for that cluster's goroutines.
func (s *Server) reap() {
	defer s.wg.Done()
	for {
		select {
		case rt := <-s.retire:
			s.reapCluster(rt)
		case <-s.quit:
			return
		}
	}
}

func (s *Server) reapCluster(rt *clusterRT) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.clusters[rt.name] != rt || !rt.isRetirable() {
		return
	}
	delete(s.clusters, rt.name)
	rt.close()
	if err := s.store.Update(func(w state.Writer) error { return w.DeleteClusterByName(rt.name) }); err != nil {
		s.log.Error("delete removed cluster", "cluster", rt.name, "err", err)
	}
	s.setClusterServing(rt.name, false)
	s.log.Debug("cluster retired", "cluster", rt.name)
}

// clusterReady counts one more startup cluster through its first round of
// probes; the last one makes the proxy ready.
func (s *Server) clusterReady() {
	if s.unready.Add(-1) > 0 {
		return
	}
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
// the proxy's own health service named after the cluster.
func (s *Server) setClusterServing(name string, serving bool) {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	if s.stopping {
		return
	}
	status := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		status = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus(name, status)
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

	// The admin server goes last, so that /ready answers 503 for as long
	// as the proxy drains.
	if adm != nil {
		s.stopAdmin(adm)
	}
	close(s.quit)
	s.wg.Wait()
	for _, rt := range clusters {
		rt.close()
	}
	if s.stopTLS != nil {
		s.stopTLS()
	}
}
