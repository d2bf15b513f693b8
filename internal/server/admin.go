package server

import (
	"github.com/vigil-proxy/vigil/internal/metrics"

	"context"
	"errors"
	"net"
	"time"

	"github.com/vigil-proxy/vigil/internal/admin"
	"github.com/vigil-proxy/vigil/internal/config"
)

// adminRT is the admin HTTP server in force.
type adminRT struct {
	address string // as configured
	srv     *admin.Server
	done    chan struct{}
}

// bindAdmin opens the admin socket when cfg moves the admin server to a
// new address. It returns nil, nil when nothing is to be opened.
func (s *Server) bindAdmin(cfg *config.Config) (net.Listener, error) {
	addr := cfg.Admin.Address
	if addr == "" || (s.admin != nil && s.admin.address == addr) {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, cfg.Errorf(config.Pos{}, "admin.address", "%w", err)
	}
	return ln, nil
}

// applyAdmin starts the admin server on ln (when a new socket was opened)
// and retires the one it replaces, or stops it when cfg disables it. The
// caller holds mu.
func (s *Server) applyAdmin(cfg *config.Config, ln net.Listener) {
	old := s.admin
	switch {
	case ln != nil:
		s.admin = s.startAdmin(cfg.Admin.Address, ln)
	case cfg.Admin.Address == "":
		s.admin = nil
	default:
		return // unchanged
	}
	if old != nil {
		s.stopAdmin(old)
	}
}

func (s *Server) startAdmin(address string, ln net.Listener) *adminRT {
	a := &adminRT{
		address: address,
		srv: admin.New(admin.Options{
			Store:    s.store,
			Ready:    s.Serving,
			Gatherer: s.metricsRegistry,
			Stats:    s.endpointStats,
			Traffic:  s.metricsRegistry.Traffic,
			Logger:   s.log,
		}),
		done: make(chan struct{}),
	}
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Error("admin server stopped", "address", ln.Addr().String(), "err", err)
		}
	}()
	return a
}

// stopAdmin shuts an admin server down in the background; the server's
// wait group owns it.
func (s *Server) stopAdmin(a *adminRT) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.srv.Shutdown(ctx)
		<-a.done
	}()
}

// endpointStats is what /clusters adds to the store's view of an endpoint:
// when it was last probed, how long that took, and what is in flight on it
// (connections and RPCs, dials included).
func (s *Server) endpointStats(cluster, address string) (admin.EndpointStats, bool) {
	st, ok := s.metrics.endpoint(cluster, address)
	s.mu.Lock()
	rt := s.clusters[cluster]
	s.mu.Unlock()
	if rt == nil {
		return st, ok
	}
	if n, found := rt.pool.Inflight(address); found {
		st.Inflight, ok = n, true
	}
	if w, found := rt.pool.EffectiveWeight(address); found {
		st.EffectiveWeight, st.HasEffectiveWeight, ok = w, true, true
	}
	if ls, found := rt.pool.LoadState(address); found && !ls.At.IsZero() {
		st.Load = &metrics.LoadReport{
			CPUUtilization: ls.Report.CPUUtilization, ApplicationUtilization: ls.Report.ApplicationUtilization,
			QPS: ls.Report.QPS, EPS: ls.Report.EPS, At: ls.At, Weight: ls.Weight,
		}
	}
	return st, ok
}

// effectiveWeight is the weight traffic is spread by now for an endpoint
// (vigil_endpoint_weight).
func (s *Server) effectiveWeight(cluster, address string) (float64, bool) {
	s.mu.Lock()
	rt := s.clusters[cluster]
	s.mu.Unlock()
	if rt == nil {
		return 0, false
	}
	return rt.pool.EffectiveWeight(address)
}
