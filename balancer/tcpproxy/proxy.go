package tcpproxy

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

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/route"
	"github.com/vigil-proxy/vigil/internal/accesslog"
)

// Defaults for Options fields left zero.
const (
	// DefaultDialTimeout bounds one connection attempt to an endpoint. A
	// healthy endpoint on a LAN or loopback answers a SYN in well under a
	// millisecond and a refusing one at once; an attempt that takes a second
	// is almost always a blackholed host, and the client is better served by
	// another endpoint than by waiting for SYN retransmits (the first one is
	// due after 1s on Linux). With DefaultRetries the worst case a client
	// waits before being closed is 3s, below common client connect timeouts.
	DefaultDialTimeout = time.Second
	// DefaultRetries is how many other endpoints are tried after a failed
	// dial.
	DefaultRetries = 2
)

// Options configure a Proxy. The zero value is usable.
type Options struct {
	// DialTimeout bounds each attempt to connect to an endpoint; zero means
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// Retries is how many other endpoints are tried after a dial error
	// (refused, timeout) before the client connection is closed; zero means
	// DefaultRetries and a negative value disables retries.
	Retries int
	// IdleTimeout closes a connection pair that carried no byte either way
	// for this long: nothing received from either peer and nothing
	// acknowledged by either, so a peer that stopped reading counts as idle
	// and a slow one that keeps reading does not. A pair is closed between
	// IdleTimeout and about 1.5×IdleTimeout after its last byte. Zero means
	// no idle timeout.
	IdleTimeout time.Duration
	// MaxConnections caps the concurrent client connections; beyond it a
	// new connection is closed as soon as it is accepted. Zero means no cap.
	MaxConnections int
	// Logger receives the proxy's records; nil means slog.Default(). Add
	// the listener's name with Logger.With. Per-connection records are at
	// debug level.
	Logger *slog.Logger
	// Metrics receives connection events; nil means none.
	Metrics Metrics
	// AccessLog, when not nil, gets one record per connection as it ends
	// (SetAccessLog changes it).
	AccessLog *accesslog.Logger
	// Routes, when some route matches on SNI, routes each connection by
	// its TLS server name (SetRoutes changes them); its default is the
	// cluster given to New.
	Routes *route.Table
	// HelloTimeout bounds reading a ClientHello to route by; zero means
	// DefaultHelloTimeout.
	HelloTimeout time.Duration
}

// Proxy accepts TCP connections and forwards each one to an endpoint of its
// cluster. A Proxy may serve several listeners at once.
type Proxy struct {
	cluster   atomic.Pointer[balancer.Cluster]
	accessLog atomic.Pointer[accesslog.Logger]
	// routes is the SNI route table; connections are routed by it when it
	// has SNI routes, else go to cluster.
	routes       atomic.Pointer[route.Table]
	helloTimeout time.Duration

	dialer      net.Dialer
	retries     int
	idleTimeout time.Duration
	maxConns    int64
	log         *slog.Logger
	metrics     Metrics
	// activity tells the idle watch how much a connection carried; tests
	// replace it to exercise the fallback without kernel counters.
	activity activityFunc

	active        atomic.Int64
	lastLimitWarn atomic.Int64 // unix nanoseconds of the last "connection limit reached" record

	// conns counts every goroutine that must end before Shutdown or Close
	// return: one per running Serve and one per connection handler, busy
	// or idle.
	conns sync.WaitGroup
	// handoff passes an accepted connection to an idle handler goroutine
	// (see handler); unbuffered, so a send succeeds only when one waits.
	handoff      chan acceptedConn
	idleHandlers atomic.Int32

	mu        sync.Mutex
	closing   bool // set once; Serve refuses to start afterwards
	listeners map[net.Listener]struct{}
	// stopAccepting is closed when the listeners are closed: Serve loops
	// waiting out an accept backoff stop at once.
	stopAccepting chan struct{}

	// cutCtx is cancelled when open connections must be cut (Close, or the
	// Shutdown deadline): connection handlers watch cutCtx.Done() and dials
	// in progress are aborted.
	cutCtx context.Context
	cut    context.CancelFunc
}

// New returns a proxy that balances over cluster. cluster may be nil, in
// which case every connection is closed until SetCluster gives it one.
func New(cluster *balancer.Cluster, opts Options) *Proxy {
	p := &Proxy{
		retries:       DefaultRetries,
		idleTimeout:   max(opts.IdleTimeout, 0),
		maxConns:      int64(max(opts.MaxConnections, 0)),
		log:           opts.Logger,
		metrics:       opts.Metrics,
		activity:      kernelActivity,
		listeners:     map[net.Listener]struct{}{},
		stopAccepting: make(chan struct{}),
		handoff:       make(chan acceptedConn),
	}
	p.dialer.Timeout = opts.DialTimeout
	if p.dialer.Timeout <= 0 {
		p.dialer.Timeout = DefaultDialTimeout
	}
	switch {
	case opts.Retries > 0:
		p.retries = opts.Retries
	case opts.Retries < 0:
		p.retries = 0
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.metrics == nil {
		p.metrics = noMetrics{}
	}
	p.cutCtx, p.cut = context.WithCancel(context.Background())
	p.cluster.Store(cluster)
	p.accessLog.Store(opts.AccessLog)
	p.routes.Store(opts.Routes)
	p.helloTimeout = opts.HelloTimeout
	if p.helloTimeout <= 0 {
		p.helloTimeout = DefaultHelloTimeout
	}
	return p
}

// SetRoutes makes new connections route by t: by SNI when it has SNI
// routes, else all to its default cluster. Connections open stay where
// they are.
func (p *Proxy) SetRoutes(t *route.Table) {
	var c *balancer.Cluster
	if d := t.Default(); d != nil {
		c = d.Cluster
	}
	p.routes.Store(t)
	p.cluster.Store(c)
}

// SetAccessLog replaces the access log (nil: off) for the connections
// that end from now on.
func (p *Proxy) SetAccessLog(l *accesslog.Logger) { p.accessLog.Store(l) }

// SetCluster makes new connections balance over c; connections already open
// stay where they are. It is safe to call at any time, e.g. on a reload.
func (p *Proxy) SetCluster(c *balancer.Cluster) {
	p.routes.Store(nil)
	p.cluster.Store(c)
}

// ActiveConnections is the number of client connections open right now,
// including those still connecting to an endpoint.
func (p *Proxy) ActiveConnections() int { return int(p.active.Load()) }

// Serve accepts connections on ln and proxies each one until Shutdown or
// Close, then returns nil. It returns an error if ln fails for another
// reason; temporary accept errors (such as running out of file descriptors)
// are retried with a backoff. Serve closes ln when it returns.
func (p *Proxy) Serve(ln net.Listener) error {
	if !p.trackListener(ln) {
		ln.Close()
		return nil
	}
	defer p.conns.Done()
	defer p.untrackListener(ln)

	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if p.isClosing() {
				return nil
			}
			if !isTemporary(err) {
				return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
			}
			// Like net/http: back off from 5ms to 1s so that running out of
			// file descriptors does not turn into a busy loop.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("accept failed; retrying", "address", ln.Addr().String(), "error", err, "retry_in", backoff)
			if !p.sleep(backoff) {
				return nil
			}
			continue
		}
		backoff = 0
		p.accept(conn)
	}
}

// accept starts the handler of one accepted connection, or rejects it when
// the connection limit is reached.
func (p *Proxy) accept(conn net.Conn) {
	accepted := time.Now()
	n := p.active.Add(1)
	if p.maxConns > 0 && n > p.maxConns {
		p.active.Add(-1)
		conn.Close()
		p.rejected(conn, accepted)
		return
	}
	// An idle handler goroutine takes the connection if there is one;
	// otherwise a new one starts. Serve holds its own count in conns, so
	// this Add cannot race with a Wait that already saw zero.
	select {
	case p.handoff <- acceptedConn{conn, accepted}:
	default:
		p.conns.Add(1)
		go p.handler(conn, accepted)
	}
}

// acceptedConn is a connection handed to an idle handler goroutine.
type acceptedConn struct {
	conn     net.Conn
	accepted time.Time
}

// maxIdleHandlers bounds the handler goroutines that wait for the next
// connection; beyond it a handler whose connection ended exits.
const maxIdleHandlers = 64

// handler runs connections one after the other: conn, then whatever accept
// hands over while it waits, until the listeners close or enough handlers
// already wait.
//
// Reusing the goroutine is worth it because of its stack: a connection's
// handler needs more stack than a new goroutine gets (dialling goes deep
// into net and the runtime), and growing it, by copying it twice, cost a
// tenth of the proxy's CPU per connection on the BenchmarkConnect profile.
// A handler that waits keeps its stack (the garbage collector may halve it,
// which costs one copy later, not two).
//
// A handler that waits handlerIdle without a connection exits, so that a
// quiet proxy goes back to the goroutines it had before the traffic.
func (p *Proxy) handler(conn net.Conn, accepted time.Time) {
	defer p.conns.Done()
	var idle *time.Timer // one per goroutine, reset for every wait
	defer func() {
		if idle != nil {
			idle.Stop()
		}
	}()
	for {
		p.handle(conn, accepted)
		if p.idleHandlers.Add(1) > maxIdleHandlers {
			p.idleHandlers.Add(-1)
			return
		}
		if idle == nil {
			idle = time.NewTimer(handlerIdle)
		} else {
			idle.Reset(handlerIdle)
		}
		select {
		case next := <-p.handoff:
			p.idleHandlers.Add(-1)
			conn, accepted = next.conn, next.accepted
		case <-idle.C:
			p.idleHandlers.Add(-1)
			return
		case <-p.stopAccepting:
			p.idleHandlers.Add(-1)
			return
		}
	}
}

// handlerIdle is how long a handler goroutine waits for another connection.
const handlerIdle = time.Second

// rejected accounts for a connection closed because of MaxConnections.
func (p *Proxy) rejected(conn net.Conn, accepted time.Time) {
	stats := ConnStats{Outcome: OutcomeOverLimit, Duration: time.Since(accepted)}
	if c := p.cluster.Load(); c != nil {
		stats.Cluster = c.Name()
	}
	p.metrics.ConnectionClosed(stats)
	p.logAccess(conn, accepted, &stats)
	// A flood of rejections is worth one warning every 10 seconds, not one
	// record per connection.
	last := p.lastLimitWarn.Load()
	if now := accepted.UnixNano(); now-last >= int64(10*time.Second) && p.lastLimitWarn.CompareAndSwap(last, now) {
		p.log.Warn("connection limit reached; closing new connections", "cluster", stats.Cluster, "max_connections", p.maxConns)
	}
}

// sleep waits for d, or until the listeners are closed; it reports whether
// Serve should go on.
func (p *Proxy) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.stopAccepting:
		return false
	}
}

func (p *Proxy) trackListener(ln net.Listener) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.listeners[ln] = struct{}{}
	p.conns.Add(1)
	return true
}

func (p *Proxy) untrackListener(ln net.Listener) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.listeners[ln]; ok {
		delete(p.listeners, ln)
		ln.Close()
	}
}

func (p *Proxy) isClosing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closing
}

// closeListeners stops every Serve loop; connections already accepted go on.
func (p *Proxy) closeListeners() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return nil
	}
	p.closing = true
	close(p.stopAccepting)
	var errs []error
	for ln := range p.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("close listener %s: %w", ln.Addr(), err))
		}
		delete(p.listeners, ln)
	}
	return errors.Join(errs...)
}

// Shutdown stops accepting connections and waits for the open ones to end.
// When ctx is done first, the remaining connections are cut (reset) and
// Shutdown returns ctx's error once their goroutines have ended.
func (p *Proxy) Shutdown(ctx context.Context) error {
	lnErr := p.closeListeners()
	drained := make(chan struct{})
	go func() {
		p.conns.Wait()
		close(drained)
	}()
	select {
	case <-drained:
		return lnErr
	case <-ctx.Done():
		open := p.active.Load()
		p.cut()
		<-drained
		return errors.Join(lnErr, fmt.Errorf("tcp proxy shutdown: %d open connections cut: %w", open, ctx.Err()))
	}
}

// Close stops accepting connections, cuts the open ones and returns once
// every goroutine of the proxy has ended.
func (p *Proxy) Close() error {
	err := p.closeListeners()
	p.cut()
	p.conns.Wait()
	return err
}

// temporaryErrnos are accept errors that say the process or the system is
// short of a resource, or that one connection went away before it was
// accepted: the listener itself is fine and accepting again later works.
var temporaryErrnos = []syscall.Errno{
	syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
	syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO,
}

func isTemporary(err error) bool {
	for _, errno := range temporaryErrnos {
		if errors.Is(err, errno) {
			return true
		}
	}
	var timeout interface{ Timeout() bool }
	if errors.As(err, &timeout) && timeout.Timeout() {
		return true
	}
	// Listeners other than net's (TLS, test listeners) may still use the
	// older Temporary convention.
	var temporary interface{ Temporary() bool }
	return errors.As(err, &temporary) && temporary.Temporary()
}
