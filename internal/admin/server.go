package admin

import (
	"context"
	_ "embed" // the Grafana dashboard
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigil-proxy/vigil/internal/metrics"
	"github.com/vigil-proxy/vigil/internal/state"
)

// DefaultAddress is where the admin server listens unless configured
// otherwise: loopback only, since the API has no authentication.
const DefaultAddress = "127.0.0.1:9901"

// Defaults for zero Options.
const (
	DefaultReplay        = 100
	DefaultMaxStreams    = 64
	DefaultMaxRequests   = 16
	DefaultHeartbeat     = 15 * time.Second
	DefaultWriteTimeout  = 10 * time.Second
	defaultReadHeader    = 5 * time.Second
	defaultReadTimeout   = 10 * time.Second
	defaultIdleTimeout   = 60 * time.Second
	defaultMaxHeaderSize = 16 << 10
)

// EndpointStats is what the data path and the probes know about an
// endpoint beyond its health: metrics.Metrics.Endpoint provides it.
type EndpointStats = metrics.EndpointStats

// LoadStats is an endpoint's latest ORCA load report, in EndpointStats.
type LoadStats = metrics.LoadReport

// Options configure a Server.
type Options struct {
	// Store is the state store the API reads. Required.
	Store *state.Store
	// Ready reports whether the proxy's own service "" is SERVING; nil
	// means always ready.
	Ready func() bool
	// Gatherer is served on /metrics; nil answers 404 there.
	Gatherer prometheus.Gatherer
	// Stats adds last-probe and in-flight figures to /clusters; nil leaves
	// them out (null and 0).
	Stats func(cluster, address string) (EndpointStats, bool)
	// Traffic reads a cluster's RPC counters for the status page's rates
	// (metrics.Metrics.Traffic); nil leaves the rates out.
	Traffic func(cluster string) (metrics.ClusterTraffic, bool)
	// Now is the clock of the ages /clusters shows (a load report's
	// age_seconds); nil means time.Now.
	Now func() time.Time
	// Logger receives the server's few records; nil discards them.
	Logger *slog.Logger
	// Replay is how many recent events /events sends on connect: 0 means
	// DefaultReplay, negative none. A client may ask for another number
	// with ?replay=N.
	Replay int
	// MaxStreams bounds concurrent /events streams (0: DefaultMaxStreams);
	// more are refused with 503.
	MaxStreams int
	// MaxRequests bounds the other requests served at once (0:
	// DefaultMaxRequests); more are refused with 503.
	MaxRequests int
	// Heartbeat is how often an idle event stream gets a comment line, so
	// that proxies and load balancers do not cut it (0: DefaultHeartbeat).
	Heartbeat time.Duration
	// WriteTimeout bounds each write to a client (0: DefaultWriteTimeout):
	// a client that stops reading is dropped.
	WriteTimeout time.Duration
}

// Server is the admin HTTP server.
type Server struct {
	opts Options
	log  *slog.Logger
	http *http.Server

	// ctx ends when Shutdown begins; event streams watch it.
	ctx    context.Context
	cancel context.CancelFunc

	streamSlots  chan struct{}
	requestSlots chan struct{}

	mu      sync.Mutex
	closed  bool
	streams sync.WaitGroup // event streams in progress
	// following counts the event streams past their replay, following
	// the store live.
	following atomic.Int64

	pageHubState // the status page's view of the store
}

// New returns a server; Serve starts it.
func New(opts Options) *Server {
	if opts.Replay == 0 {
		opts.Replay = DefaultReplay
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = DefaultMaxStreams
	}
	if opts.MaxRequests <= 0 {
		opts.MaxRequests = DefaultMaxRequests
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = DefaultHeartbeat
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.Ready == nil {
		opts.Ready = func() bool { return true }
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opts:         opts,
		log:          opts.Logger,
		streamSlots:  make(chan struct{}, opts.MaxStreams),
		requestSlots: make(chan struct{}, opts.MaxRequests),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.http = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: defaultReadHeader,
		ReadTimeout:       defaultReadTimeout,
		IdleTimeout:       defaultIdleTimeout,
		MaxHeaderBytes:    defaultMaxHeaderSize,
		// Scanners and broken clients are no news worth a warning.
		ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
		// Handlers derive from the server's context so that Shutdown
		// ends event streams.
		BaseContext: func(net.Listener) context.Context { return s.ctx },
	}
	return s
}

//go:embed dashboards/vigil.json
var dashboard []byte

// Handler is the API's HTTP handler (also usable without Serve, e.g. in
// tests or behind another server).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", s.limited(http.HandlerFunc(s.page)))
	mux.Handle("GET /ui/{file}", s.limited(http.HandlerFunc(s.pageAsset)))
	mux.HandleFunc("GET /ui/stream", s.pageStream)
	mux.Handle("GET /clusters", s.limited(http.HandlerFunc(s.clusters)))
	mux.Handle("GET /routes", s.limited(http.HandlerFunc(s.routes)))
	mux.Handle("GET /ready", s.limited(http.HandlerFunc(s.ready)))
	mux.Handle("GET /dashboards/vigil.json", s.limited(http.HandlerFunc(serveDashboard)))
	if s.opts.Gatherer != nil {
		mux.Handle("GET /metrics", s.limited(promhttp.HandlerFor(s.opts.Gatherer, promhttp.HandlerOpts{
			ErrorLog:      promLogger{s.log},
			ErrorHandling: promhttp.ContinueOnError,
			Timeout:       s.opts.WriteTimeout,
		})))
	}
	mux.HandleFunc("GET /events", s.events)
	// The Go runtime's profiles, as Caddy's admin API serves them: how an
	// operator finds out where a proxy's memory or CPU goes without
	// rebuilding it. A CPU profile longer than the write timeout is
	// refused by the handler itself.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

// Serve accepts connections on ln until Shutdown, then returns nil. It
// logs "admin listening" with the bound address first.
func (s *Server) Serve(ln net.Listener) error {
	addr := ln.Addr().String()
	s.log.Info("admin listening", "address", addr)
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsLoopback() {
			s.log.Warn("admin API reachable from other hosts; it has no authentication", "address", addr)
		}
	}
	s.pageHub() // the timelines start now, before a page opens
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serve admin API on %s: %w", addr, err)
}

// Shutdown ends every event stream, stops accepting, and waits for the
// requests in progress until ctx is done; then it closes what is left and
// returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	err := s.http.Shutdown(ctx)
	streamsDone := make(chan struct{})
	go func() {
		defer close(streamsDone)
		s.streams.Wait()
	}()
	select {
	case <-streamsDone:
	case <-ctx.Done():
		_ = s.http.Close()
		<-streamsDone // they end once their connections are closed
		if err == nil {
			err = ctx.Err()
		}
	}
	s.stopPageHub()
	if err != nil {
		return fmt.Errorf("admin shutdown: %w", err)
	}
	return nil
}

// limited refuses requests beyond MaxRequests at once and bounds how long
// writing the answer may take.
func (s *Server) limited(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case s.requestSlots <- struct{}{}:
			defer func() { <-s.requestSlots }()
		default:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "admin API busy", http.StatusServiceUnavailable)
			return
		}
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
		h.ServeHTTP(w, r)
	})
}

const indexText = `vigil admin API
  GET /                       the status page (in a browser)
  GET /clusters               clusters and endpoints with their health (JSON)
  GET /ready                  200 while ready, 503 otherwise
  GET /metrics                Prometheus metrics
  GET /events                 the eviction log as server-sent events (?replay=N)
  GET /dashboards/vigil.json  a Grafana dashboard for these metrics
  GET /ui/stream              the status page's live stream (server-sent events)
`

func (s *Server) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, indexText)
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !s.opts.Ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "not ready\n")
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}

func serveDashboard(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(dashboard)
}

// promLogger passes promhttp's errors to slog.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) { l.log.Warn("metrics: " + fmt.Sprint(v...)) }
