// Package grpcproxy is vigil's gRPC data path: the listener behind
// `protocol: grpc`. It terminates HTTP/2 (h2c) from clients, picks a healthy
// endpoint of its cluster for every RPC (every HTTP/2 stream), and forwards
// the stream's frames on a multiplexed HTTP/2 connection to that endpoint,
// without decoding any message: request headers are re-encoded for the
// backend connection (HPACK state is per connection), DATA passes as it
// came, so compressed messages stay compressed and cost nothing to forward,
// and response headers, trailers (status, message, details) and resets go
// back the same way. grpc-timeout travels in the headers (the backend sees
// the deadline), and a client's RST_STREAM becomes the backend's
// (cancellation). The listener answers grpc.health.v1.Health itself.
//
// Per-stream flow control runs on both sides: the proxy grants a peer
// window only for what it has forwarded, so one stream buffers at most
// streamWindow bytes per direction, and a peer that overruns its window is
// reset. An RPC is retried on another endpoint only while none of it was
// sent (the backend connection failed to connect or to complete the HTTP/2
// handshake, or GOAWAY said the stream was never processed, which a
// REFUSED_STREAM passes to the client).
//
// Goroutines: per client connection a reader and a writer (the writer
// isolates the proxy from clients that stop reading); per backend
// connection a reader, which also writes to the client connections' queues;
// per endpoint a watcher that cuts its streams when it is closed; none per
// RPC. Locks: a stream's mu, then its backend connection's writer lock,
// then its client connection's writer lock; never the other way.
//
// This frame-level design (as HAProxy and Envoy forward gRPC) replaced a
// grpc-go passthrough (grpc.Server with an unknown-service handler and a
// raw codec, grpc.ClientConn to the backend) that cost about three times
// as much CPU per RPC: see the benchmarks.
package grpcproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/health"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/route"
	"github.com/vigil-proxy/vigil/internal/accesslog"
)

// Defaults for the zero values of Options.
const (
	// DefaultMaxConcurrentStreams is what HTTP/2 recommends as the least a
	// peer should allow, and Envoy's recommended cap for edge proxies.
	DefaultMaxConcurrentStreams = 100
	// DefaultMaxMessageSize leaves room for 16 MiB payloads plus framing.
	DefaultMaxMessageSize = 32 << 20
	// DefaultIdleTimeout closes client connections without an RPC for that
	// long (with a graceful GOAWAY, which clients handle by reconnecting).
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultRetries is how many other endpoints an RPC tries when the
	// picked one could not be reached before anything was sent.
	DefaultRetries = 2
	// maxRetries bounds Options.Retries.
	maxRetries = 8
)

// Options configures one grpc listener. Zero values take the defaults.
type Options struct {
	// MaxConcurrentStreams caps the concurrent RPCs of one client
	// connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
	MaxConcurrentStreams uint32
	// MaxMessageSize caps one message in bytes, in either direction, as
	// sent (a compressed message counts compressed); a larger one fails
	// the RPC with RESOURCE_EXHAUSTED.
	MaxMessageSize int
	// IdleTimeout closes a client connection that had no RPC open for this
	// long.
	IdleTimeout time.Duration
	// MaxConnections caps concurrent client connections; 0 is no cap.
	// Connections over the cap are closed at once.
	MaxConnections int
	// Health is the proxy's own health service, owned by the caller and
	// shared by all grpc listeners; it is registered on this listener and
	// answered locally. nil registers a private one, in which only
	// service "" is SERVING.
	Health *health.Server
	// Logger receives the listener's few log records; nil discards them.
	Logger *slog.Logger
	// Metrics receives per-RPC and per-connection hooks; nil disables them.
	Metrics Metrics
	// AccessLog, when not nil, gets one record per RPC as it ends
	// (SetAccessLog changes it).
	AccessLog *accesslog.Logger
	// Retries is how many other endpoints an RPC tries when the picked one
	// could not be reached before anything was sent (connection refused or
	// reset on connect). 0 means DefaultRetries, negative means none; at
	// most 8.
	Retries int
}

// Proxy is one grpc listener.
type Proxy struct {
	// routes is read once per RPC: the route table in force.
	routes      atomic.Pointer[route.Table]
	accessLog   atomic.Pointer[accesslog.Logger]
	health      *health.Server
	log         *slog.Logger
	metrics     Metrics
	retries     int
	maxConns    int
	maxStreams  uint32
	maxMsg      int
	idleTimeout time.Duration

	// acks holds the PING acks of every connection (see pingAckDelay);
	// its goroutine starts with the first Serve.
	acks      *ackClock
	ackerOnce sync.Once

	// pools are the frame engine's connections per endpoint
	// (*balancer.Endpoint -> *upPool).
	pools sync.Map
	// wg counts every goroutine the proxy starts: client connections,
	// backend connections, endpoint watchers, health Watch calls.
	wg sync.WaitGroup

	// stopping is cancelled when Shutdown or Close begins: health Watch
	// streams end and connections get GOAWAY.
	stopping context.Context
	stop     context.CancelFunc
	// done is closed once everything is stopped: endpoint watchers end.
	done      chan struct{}
	closeOnce sync.Once

	connsMu   sync.Mutex
	closing   bool // no new connections are served
	conns     map[*downConn]struct{}
	listeners map[net.Listener]struct{}
	idle      chan struct{} // closed when conns empties during shutdown

	connLimit connLimit
}

// New returns a proxy for cluster. Serve starts it.
func New(cluster *balancer.Cluster, opts Options) *Proxy {
	return NewRouted(route.New(nil, cluster), opts)
}

// NewRouted returns a proxy that forwards each RPC to the cluster of its
// route in routes. Serve starts it.
func NewRouted(routes *route.Table, opts Options) *Proxy {
	if opts.MaxConcurrentStreams == 0 {
		opts.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = DefaultMaxMessageSize
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	switch {
	case opts.Retries == 0:
		opts.Retries = DefaultRetries
	case opts.Retries < 0:
		opts.Retries = 0
	case opts.Retries > maxRetries:
		opts.Retries = maxRetries
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Health == nil {
		opts.Health = health.NewServer()
	}
	p := &Proxy{
		health:      opts.Health,
		log:         opts.Logger,
		metrics:     opts.Metrics,
		retries:     opts.Retries,
		maxConns:    opts.MaxConnections,
		maxStreams:  opts.MaxConcurrentStreams,
		maxMsg:      opts.MaxMessageSize,
		idleTimeout: opts.IdleTimeout,
		done:        make(chan struct{}),
		acks:        newAckClock(),
		conns:       map[*downConn]struct{}{},
		listeners:   map[net.Listener]struct{}{},
	}
	p.stopping, p.stop = context.WithCancel(context.Background())
	p.routes.Store(routes)
	p.accessLog.Store(opts.AccessLog)
	return p
}

// SetAccessLog replaces the access log (nil: off) for the RPCs that
// begin from now on.
func (p *Proxy) SetAccessLog(l *accesslog.Logger) { p.accessLog.Store(l) }

// SetCluster makes c the listener's only cluster: a table without routes
// whose default is c. RPCs already forwarded finish where they are.
func (p *Proxy) SetCluster(c *balancer.Cluster) { p.routes.Store(route.New(nil, c)) }

// SetRoutes swaps in a new route table (a reload changed the routes or the
// default cluster): new RPCs use it; RPCs already forwarded, and client
// connections, are not touched.
func (p *Proxy) SetRoutes(t *route.Table) { p.routes.Store(t) }

// Routes is the route table in force.
func (p *Proxy) Routes() *route.Table { return p.routes.Load() }

// Cluster is the default cluster RPCs no route matches go to, or nil.
func (p *Proxy) Cluster() *balancer.Cluster {
	if d := p.routes.Load().Default(); d != nil {
		return d.Cluster
	}
	return nil
}

// Serve accepts client connections on ln until Shutdown or Close, and then
// returns nil. ln is closed when Serve returns.
func (p *Proxy) Serve(ln net.Listener) error {
	if p.maxConns > 0 || p.metrics != nil {
		ln = &limitListener{Listener: ln, p: p}
	}
	p.connsMu.Lock()
	if p.closing {
		p.connsMu.Unlock()
		_ = ln.Close()
		return nil
	}
	p.listeners[ln] = struct{}{}
	p.ackerOnce.Do(func() {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.acks.run(p.done)
		}()
	})
	p.connsMu.Unlock()
	defer func() {
		p.connsMu.Lock()
		delete(p.listeners, ln)
		p.connsMu.Unlock()
		_ = ln.Close()
	}()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if p.stopping.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of file descriptors or similar: wait, do not spin.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				p.log.Warn("accept failed, retrying", "listener", ln.Addr().String(), "error", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("serve grpc on %s: %w", ln.Addr(), err)
		}
		delay = 0
		p.connsMu.Lock()
		if p.closing {
			p.connsMu.Unlock()
			_ = nc.Close()
			return nil
		}
		p.wg.Add(1)
		p.connsMu.Unlock()
		go func() {
			defer p.wg.Done()
			p.serveConn(nc)
		}()
	}
}

// trackConn registers a client connection; false once the proxy is
// closing.
func (p *Proxy) trackConn(dc *downConn) bool {
	p.connsMu.Lock()
	defer p.connsMu.Unlock()
	if p.closing {
		return false
	}
	p.conns[dc] = struct{}{}
	return true
}

func (p *Proxy) untrackConn(dc *downConn) {
	p.connsMu.Lock()
	defer p.connsMu.Unlock()
	delete(p.conns, dc)
	if len(p.conns) == 0 && p.idle != nil {
		select {
		case <-p.idle:
		default:
			close(p.idle)
		}
	}
}

// beginStop stops accepting: listeners close, health Watch streams end,
// and every client connection gets a GOAWAY (graceful) or is closed.
func (p *Proxy) beginStop(graceful bool) chan struct{} {
	p.stop()
	p.connsMu.Lock()
	p.closing = true
	idle := make(chan struct{})
	p.idle = idle
	for ln := range p.listeners {
		_ = ln.Close()
	}
	conns := make([]*downConn, 0, len(p.conns))
	for dc := range p.conns {
		conns = append(conns, dc)
	}
	if len(p.conns) == 0 {
		close(idle)
	}
	p.connsMu.Unlock()
	for _, dc := range conns {
		dc.w.mu.Lock()
		if graceful {
			dc.goAwayLocked()
		} else {
			dc.killLocked()
		}
		dc.w.mu.Unlock()
	}
	return idle
}

// Shutdown stops accepting connections, tells clients to go away (HTTP/2
// GOAWAY) and waits for in-flight RPCs to finish. When ctx is done first,
// the remaining RPCs are cut (clients see UNAVAILABLE) and Shutdown returns
// ctx's error. Health Watch streams end at once with UNAVAILABLE: the
// caller has set the statuses they were waiting for before shutting down.
func (p *Proxy) Shutdown(ctx context.Context) error {
	idle := p.beginStop(true)
	var err error
	select {
	case <-idle:
	case <-ctx.Done():
		p.beginStop(false)
		err = fmt.Errorf("grpc listener shutdown: in-flight RPCs cut: %w", context.Cause(ctx))
	}
	p.finish()
	return err
}

// Close stops the listener at once, cutting in-flight RPCs.
func (p *Proxy) Close() error {
	p.beginStop(false)
	p.finish()
	return nil
}

// finish closes the backend connections and waits for every goroutine the
// proxy started.
func (p *Proxy) finish() {
	p.closeOnce.Do(func() {
		p.connsMu.Lock()
		for dc := range p.conns {
			dc.w.mu.Lock()
			dc.killLocked()
			dc.w.mu.Unlock()
		}
		p.connsMu.Unlock()
		close(p.done)
		p.pools.Range(func(_, v any) bool {
			v.(*upPool).close("vigil: listener closed")
			return true
		})
	})
	p.wg.Wait()
}
