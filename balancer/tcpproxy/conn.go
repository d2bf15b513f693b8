package tcpproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/route"
	"github.com/vigil-proxy/vigil/internal/accesslog"
)

// handle runs one client connection from accept to close.
func (p *Proxy) handle(client net.Conn, accepted time.Time) {
	defer p.active.Add(-1)

	stats := ConnStats{}
	cluster := p.cluster.Load()
	var hello []byte // what was read of the client to route it
	if rt := p.routes.Load(); rt.HasSNI() {
		var ok bool
		cluster, hello, ok = p.route(rt, client, &stats)
		if !ok {
			client.Close()
			stats.Duration = time.Since(accepted)
			p.metrics.ConnectionClosed(stats)
			p.logAccess(client, accepted, &stats)
			return
		}
	}
	if cluster != nil {
		stats.Cluster = cluster.Name()
	}
	upstream, ep := p.connect(cluster, client, &stats)
	if upstream != nil && len(hello) > 0 {
		// The ClientHello goes first, as it came; then everything else
		// passes through untouched (spliced, between plain sockets).
		if _, err := upstream.Write(hello); err != nil {
			stats.Outcome = OutcomeError
			upstream.Close()
			ep.Release()
			upstream = nil
		}
	}
	if upstream != nil {
		stats.Endpoint = ep.Address()
		p.metrics.ConnectionOpened(stats.Cluster, stats.Endpoint)
		reset := p.forward(client, upstream, ep, &stats)
		stats.BytesToUpstream += int64(len(hello))
		ep.Release()
		// What the connection says about its endpoint, for outlier
		// detection: a reset before any byte came back is a failure;
		// an answer is a success; anything else (the client left
		// first, an idle timeout) says nothing.
		switch {
		case stats.BytesToClient > 0:
			ep.Report(codes.OK)
		case reset:
			ep.Report(codes.Unavailable)
		}
	}
	client.Close()
	stats.Duration = time.Since(accepted)
	p.metrics.ConnectionClosed(stats)
	p.logAccess(client, accepted, &stats)
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		p.log.Debug("connection closed", "cluster", stats.Cluster, "endpoint", stats.Endpoint,
			"client", client.RemoteAddr().String(), "outcome", string(stats.Outcome), "attempts", stats.Attempts,
			"bytes_to_upstream", stats.BytesToUpstream, "bytes_to_client", stats.BytesToClient,
			"duration", stats.Duration)
	}
}

// route picks the cluster of a connection by its TLS server name: the
// terminated handshake's (a TLS listener), else the ClientHello read off
// the connection without terminating it, whose bytes it returns to be
// forwarded first. A client that sends no TLS (or nothing within the hello
// timeout) counts as one without SNI. ok is false when the connection is
// to be closed: a malformed, cut or oversized hello, or no route and no
// default; stats says why.
func (p *Proxy) route(rt *route.Table, client net.Conn, stats *ConnStats) (cluster *balancer.Cluster, hello []byte, ok bool) {
	if tc, isTLS := client.(interface{ ConnectionState() tls.ConnectionState }); isTLS {
		stats.SNI = tc.ConnectionState().ServerName
	} else {
		data, sni, _, err := readHello(client, p.helloTimeout)
		if err != nil {
			stats.Outcome = OutcomeBadHello
			if p.log.Enabled(context.Background(), slog.LevelDebug) {
				p.log.Debug("closing connection: no valid TLS ClientHello", "client", client.RemoteAddr().String(),
					"bytes", len(data), "error", err)
			}
			return nil, nil, false
		}
		stats.SNI, hello = sni, data
	}
	e := rt.SNI(stats.SNI)
	if e == nil || e.Cluster == nil {
		stats.Outcome = OutcomeNoRoute
		if p.log.Enabled(context.Background(), slog.LevelDebug) {
			p.log.Debug("closing connection: no route for its server name", "client", client.RemoteAddr().String(), "sni", stats.SNI)
		}
		return nil, nil, false
	}
	stats.Route = e.Label
	return e.Cluster, hello, true
}

// logAccess queues the connection's access log record, if the log is on.
func (p *Proxy) logAccess(client net.Conn, accepted time.Time, stats *ConnStats) {
	al := p.accessLog.Load()
	if al == nil {
		return
	}
	al.Log(&accesslog.Record{
		Kind:     accesslog.TCP,
		Start:    accepted,
		Duration: stats.Duration,
		Route:    stats.Route,
		Cluster:  stats.Cluster,
		Endpoint: stats.Endpoint,
		SNI:      stats.SNI,
		Client:   client.RemoteAddr(),
		BytesIn:  stats.BytesToUpstream,
		BytesOut: stats.BytesToClient,
		Result:   accessResult(stats.Outcome),
	})
}

// accessResult is the access log's name for an outcome: the contract's
// five. A reset either way and a rejection over max_connections are
// "closed" (the metrics tell them apart); an endpoint removed and drained
// and a shutdown are "drained".
func accessResult(o Outcome) string {
	switch o {
	case OutcomeNoHealthyUpstream:
		return accesslog.ResultNoEndpoint
	case OutcomeConnectFailed:
		return accesslog.ResultConnectFailed
	case OutcomeIdleTimeout:
		return accesslog.ResultIdleTimeout
	case OutcomeEndpointClosed, OutcomeShutdown:
		return accesslog.ResultDrained
	case OutcomeNoRoute:
		return accesslog.ResultNoEndpoint
	default:
		return accesslog.ResultClosed
	}
}

// connect dials an endpoint of cluster for client, trying up to p.retries
// other endpoints after a failed dial. On success the endpoint has been
// Acquired and the caller releases it; otherwise stats.Outcome says why
// there is no connection.
func (p *Proxy) connect(cluster *balancer.Cluster, client net.Conn, stats *ConnStats) (net.Conn, *balancer.Endpoint) {
	if cluster == nil {
		stats.Outcome = OutcomeNoHealthyUpstream
		return nil, nil
	}
	var triedBuf [4]*balancer.Endpoint
	tried := triedBuf[:0]
	// A hashing policy (ring_hash) places the connection by its client's
	// IP address; the others ignore the key.
	key := balancer.HashIP(client.RemoteAddr())
	for range p.retries + 1 {
		if p.cutCtx.Err() != nil {
			stats.Outcome = OutcomeShutdown
			return nil, nil
		}
		// A fresh snapshot for every attempt: a retry after a slow failure
		// should see the endpoints the checker evicted meanwhile.
		ep := cluster.Snapshot().PickHash(key, tried)
		if ep == nil {
			break
		}
		tried = append(tried, ep)
		stats.Attempts++
		// Count the connection on the endpoint while it is being dialled,
		// so least_request sees connections that are still being set up.
		ep.Acquire()
		conn, err := p.dial(ep, client)
		if err == nil {
			return conn, ep
		}
		ep.Release()
		if p.cutCtx.Err() == nil {
			ep.Report(codes.Unavailable) // a connect failure, for outlier detection
		}
		p.metrics.DialFailed(stats.Cluster, ep.Address(), err)
		if p.log.Enabled(context.Background(), slog.LevelDebug) {
			p.log.Debug("endpoint dial failed", "cluster", stats.Cluster, "endpoint", ep.Address(),
				"client", client.RemoteAddr().String(), "attempt", stats.Attempts, "error", err)
		}
	}
	switch {
	case p.cutCtx.Err() != nil:
		stats.Outcome = OutcomeShutdown
	case stats.Attempts == 0:
		stats.Outcome = OutcomeNoHealthyUpstream
		if p.log.Enabled(context.Background(), slog.LevelDebug) {
			p.log.Debug("no healthy upstream; closing connection", "cluster", stats.Cluster,
				"client", client.RemoteAddr().String())
		}
	default:
		stats.Outcome = OutcomeConnectFailed
		p.log.Warn("no endpoint could be connected; closing connection", "cluster", stats.Cluster,
			"client", client.RemoteAddr().String(), "attempts", stats.Attempts)
	}
	return nil, nil
}

// dial connects to ep, over TLS when its cluster has tls: the handshake
// is bounded by the dial timeout too, and a failed one counts as a failed
// dial (the next endpoint is tried). A client that negotiated ALPN h2
// with a TLS listener gets h2 offered to the backend (a gRPC server over
// TLS requires it); otherwise no ALPN is offered.
func (p *Proxy) dial(ep *balancer.Endpoint, client net.Conn) (net.Conn, error) {
	conn, err := p.dialAddress(ep.Address())
	if err != nil {
		return nil, err
	}
	h2 := false
	if tc, ok := client.(*tls.Conn); ok {
		h2 = tc.ConnectionState().NegotiatedProtocol == "h2"
	}
	cfg := ep.TLSConfig(h2)
	if cfg == nil {
		return conn, nil
	}
	ctx, cancel := context.WithTimeout(p.cutCtx, p.dialer.Timeout)
	defer cancel()
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w", ep.Address(), err)
	}
	return tc, nil
}

// dialAddress connects to an endpoint's address. An IP address and port, the
// usual case, is dialled as such: no resolver, no parallel-dial machinery.
func (p *Proxy) dialAddress(address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return p.dialer.DialContext(p.cutCtx, "tcp", address)
	}
	c, err := p.dialer.DialTCP(p.cutCtx, "tcp", netip.AddrPort{}, ap)
	if err != nil {
		return nil, err // not a nil *net.TCPConn in a non-nil net.Conn
	}
	return c, nil
}

// Directions of a pair.
const (
	toUpstream = 0 // client → endpoint
	toClient   = 1 // endpoint → client
)

// pair is one client connection with its endpoint connection.
type pair struct {
	conns   [2]net.Conn // indexed by the direction that reads from it: client, upstream
	results chan copyResult
	// eofs counts the directions that ended with their source's FIN.
	eofs atomic.Int32

	// window is how long one io.Copy may wait for data before it returns
	// and reports its activity; zero when the idle watch does not need the
	// reports (no idle timeout, or kernel counters).
	window time.Duration
	// activity is what each direction reports to the idle watch.
	activity [2]activity

	// raw is set when both connections are plain TCP: the copies then run
	// sockets, with their own system calls (see copy.go).
	raw     bool
	sockets [2]socketCopy
}

type copyResult struct {
	dir int
	n   int64
	err error // nil: the source sent FIN and it was forwarded
}

// forward copies between client and upstream until both directions are
// done, the pair is cut, or it idles out, and closes both. It reports
// whether the endpoint reset the connection before sending any byte.
func (p *Proxy) forward(client, upstream net.Conn, ep *balancer.Endpoint, stats *ConnStats) (resetBeforeAnswer bool) {
	pr := &pair{
		conns:   [2]net.Conn{client, upstream},
		results: make(chan copyResult, 2),
	}
	pr.setupCopies()
	var watch *idleWatch
	var ticks <-chan time.Time
	if p.idleTimeout > 0 {
		tick := p.idleTimeout / ticksPerIdle
		watch = newIdleWatch(p.idleTimeout, p.activity, p.kernelCounted(client, upstream), time.Now())
		if !watch.kernel {
			pr.window = tick // the copies report about once a tick
		}
		ticker := time.NewTicker(tick)
		defer ticker.Stop()
		ticks = ticker.C
	}
	go pr.copy(toUpstream)
	go pr.copy(toClient)

	var finished [2]bool
	epClosed, cut := ep.Closed(), p.cutCtx.Done()
	for pending := 2; pending > 0; {
		select {
		case r := <-pr.results:
			pending--
			finished[r.dir] = true
			if r.dir == toUpstream {
				stats.BytesToUpstream = r.n
			} else {
				stats.BytesToClient = r.n
				resetBeforeAnswer = r.n == 0 && stats.Outcome == "" && errors.Is(r.err, syscall.ECONNRESET)
			}
			if r.err != nil && stats.Outcome == "" {
				stats.Outcome = OutcomeError
				abort(client)
				abort(upstream)
			}
		case now := <-ticks:
			reason := watch.tick(pr, finished, now)
			if reason == "" || stats.Outcome != "" {
				continue
			}
			stats.Outcome = OutcomeIdleTimeout
			if p.log.Enabled(context.Background(), slog.LevelDebug) {
				p.log.Debug("closing idle connection", "cluster", stats.Cluster, "endpoint", stats.Endpoint,
					"client", client.RemoteAddr().String(), "reason", reason,
					"client_fin", finished[toUpstream], "endpoint_fin", finished[toClient])
			}
			client.Close()
			upstream.Close()
			ticks = nil
		case <-epClosed:
			epClosed = nil
			if stats.Outcome == "" {
				stats.Outcome = OutcomeEndpointClosed
				abort(client)
				abort(upstream)
			}
		case <-cut:
			cut = nil
			if stats.Outcome == "" {
				stats.Outcome = OutcomeShutdown
				abort(client)
				abort(upstream)
			}
		}
	}
	client.Close()
	upstream.Close()
	if stats.Outcome == "" {
		stats.Outcome = OutcomeOK
	}
	return resetBeforeAnswer
}

// copy runs one direction and reports it on pr.results.
func (pr *pair) copy(dir int) {
	src, dst := pr.conns[dir], pr.conns[1-dir]
	n, err := pr.pump(dir, dst, src)
	// Forward the FIN and keep the other direction going. When the other
	// direction has already ended the same way, the pair is about to be
	// closed, and closing sends the FIN: skip a shutdown(2) per connection.
	if err == nil && pr.eofs.Add(1) == 1 {
		pr.closeWrite(dir)
	}
	pr.results <- copyResult{dir: dir, n: n, err: err}
}

// abort closes c with a reset rather than a FIN, so its peer learns that the
// stream was cut rather than complete.
func abort(c net.Conn) {
	if tc, ok := socket(c).(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// socket is the connection under c when c is a TLS connection (a listener
// terminating TLS hands those out, over a tlsterm wrapper that has its
// own NetConn), else c.
func socket(c net.Conn) net.Conn {
	for range 4 {
		nc, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = nc.NetConn()
	}
	return c
}
