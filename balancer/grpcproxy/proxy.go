// Package grpcproxy is vigil's gRPC data path: the listener behind
// `protocol: grpc`. It terminates HTTP/2 (h2c) with a grpc.Server, picks a
// healthy endpoint of its cluster for every RPC, and forwards the RPC on
// that endpoint's shared, multiplexed connection without decoding any
// message: a passthrough codec moves grpc-go's pooled buffers from one side
// to the other. Any service and method is forwarded, unary or streaming,
// with headers, trailers, status details, deadlines, cancellation and
// compression. The listener answers grpc.health.v1.Health itself.
//
// Per RPC the proxy costs one extra goroutine (the client-to-backend pump;
// the handler goroutine pumps the responses) and no lock on the pick.
package grpcproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/encoding/gzip" // gzip requests are accepted and forwarded
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/vigil-proxy/vigil/balancer"
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
	// MaxMessageSize caps one message in bytes, in either direction; a
	// larger one fails the RPC with RESOURCE_EXHAUSTED.
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
	// Retries is how many other endpoints an RPC tries when the picked one
	// could not be reached before anything was sent (connection refused or
	// reset on connect). 0 means DefaultRetries, negative means none; at
	// most 8.
	Retries int
}

// Proxy is one grpc listener: a grpc.Server that forwards every RPC it
// does not serve itself to a picked endpoint of its cluster.
type Proxy struct {
	cluster  atomic.Pointer[balancer.Cluster]
	srv      *grpc.Server
	log      *slog.Logger
	metrics  Metrics
	retries  int
	maxConns int

	// callOpts are the options of every backend call; compressed and
	// content-subtype variants are cached (see callOptions).
	callOpts   []grpc.CallOption
	variantsMu sync.Mutex
	variants   atomic.Pointer[map[variantKey][]grpc.CallOption]

	// pumps counts the request pumps, which may outlive their handler by
	// the moment grpc-go needs to close the client's stream.
	pumps sync.WaitGroup

	// stopping is cancelled when Shutdown or Close begins: health Watch
	// streams end so they do not hold the graceful stop open.
	stopping context.Context
	stop     context.CancelFunc

	// endpoint watchers cut the streams of closed endpoints.
	watchers   sync.Map // *balancer.Endpoint -> *endpointWatch
	watchersWG sync.WaitGroup
	done       chan struct{}
	closeOnce  sync.Once

	connLimit connLimit
}

// New returns a proxy for cluster. Serve starts it.
func New(cluster *balancer.Cluster, opts Options) *Proxy {
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
		log:      opts.Logger,
		metrics:  opts.Metrics,
		retries:  opts.Retries,
		maxConns: opts.MaxConnections,
		done:     make(chan struct{}),
	}
	p.stopping, p.stop = context.WithCancel(context.Background())
	p.cluster.Store(cluster)
	cdc := newCodec()
	p.callOpts = []grpc.CallOption{
		grpc.ForceCodecV2(cdc),
		grpc.MaxCallRecvMsgSize(opts.MaxMessageSize),
		grpc.MaxCallSendMsgSize(opts.MaxMessageSize),
	}
	p.variants.Store(&map[variantKey][]grpc.CallOption{})
	p.srv = grpc.NewServer(
		grpc.ForceServerCodecV2(cdc),
		grpc.UnknownServiceHandler(p.forward),
		grpc.MaxConcurrentStreams(opts.MaxConcurrentStreams),
		grpc.MaxRecvMsgSize(opts.MaxMessageSize),
		grpc.MaxSendMsgSize(opts.MaxMessageSize),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: opts.IdleTimeout,
			// Find dead clients (no FIN ever came) within a few minutes.
			Time:    2 * time.Minute,
			Timeout: 20 * time.Second,
		}),
		// Clients may ping every 10s even without RPCs: stricter policies
		// make well-configured clients reconnect with too_many_pings.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             10 * time.Second,
			PermitWithoutStream: true,
		}),
		// A client that connects and sends nothing is closed soon.
		grpc.ConnectionTimeout(10*time.Second),
		grpc.MaxHeaderListSize(1<<20),
		// Stop waits for handlers, so no pump starts after it.
		grpc.WaitForHandlers(true),
	)
	healthgrpc.RegisterHealthServer(p.srv, &healthService{Server: opts.Health, stopping: p.stopping})
	return p
}

// SetCluster moves the listener to another cluster (a reload changed its
// `cluster`). RPCs already forwarded finish where they are.
func (p *Proxy) SetCluster(c *balancer.Cluster) { p.cluster.Store(c) }

// Cluster is the cluster RPCs are currently forwarded to.
func (p *Proxy) Cluster() *balancer.Cluster { return p.cluster.Load() }

// Serve accepts client connections on ln until Shutdown or Close, and then
// returns nil. ln is closed when Serve returns.
func (p *Proxy) Serve(ln net.Listener) error {
	if p.maxConns > 0 || p.metrics != nil {
		ln = &limitListener{Listener: ln, p: p}
	}
	err := p.srv.Serve(ln)
	if err == nil || errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return fmt.Errorf("serve grpc on %s: %w", ln.Addr(), err)
}

// Shutdown stops accepting connections, tells clients to go away (HTTP/2
// GOAWAY) and waits for in-flight RPCs to finish. When ctx is done first,
// the remaining RPCs are cut (clients see UNAVAILABLE) and Shutdown returns
// ctx's error. Health Watch streams end at once with UNAVAILABLE: the
// caller has set the statuses they were waiting for before shutting down.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.stop()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		p.srv.GracefulStop()
	}()
	var err error
	select {
	case <-stopped:
	case <-ctx.Done():
		p.srv.Stop()
		<-stopped
		err = fmt.Errorf("grpc listener shutdown: in-flight RPCs cut: %w", context.Cause(ctx))
	}
	p.finish()
	return err
}

// Close stops the listener at once, cutting in-flight RPCs.
func (p *Proxy) Close() error {
	p.stop()
	p.srv.Stop()
	p.finish()
	return nil
}

// finish waits for everything the proxy started, once the server stopped.
func (p *Proxy) finish() {
	p.pumps.Wait()
	p.closeOnce.Do(func() { close(p.done) })
	p.watchersWG.Wait()
}

// Dial returns the data connection for an endpoint at address, with what
// the proxy needs: h2c, reconnection backoff bounded at 5s so a restarted
// backend is back fast, no keepalive pings (grpc-go servers GOAWAY clients
// that ping more often than every 5 minutes; the endpoint's probes detect a
// dead backend instead), and the passthrough resolver (address is used as
// is, never resolved to several backends). It starts connecting at once.
// The caller passes it to balancer.NewEndpoint (probes may share it) and
// closes it once the endpoint has drained. opts are applied last.
func Dial(address string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	base := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   5 * time.Second,
			},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithUserAgent("vigil"),
	}
	cc, err := grpc.NewClient("passthrough:///"+address, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", address, err)
	}
	cc.Connect()
	return cc, nil
}
