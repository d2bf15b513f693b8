package tcpproxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/vigil-proxy/vigil/balancer"
)

// handle runs one client connection from accept to close.
func (p *Proxy) handle(client net.Conn, accepted time.Time) {
	defer p.conns.Done()
	defer p.active.Add(-1)

	stats := ConnStats{}
	cluster := p.cluster.Load()
	if cluster != nil {
		stats.Cluster = cluster.Name()
	}
	upstream, ep := p.connect(cluster, client, &stats)
	if upstream != nil {
		stats.Endpoint = ep.Address()
		p.metrics.ConnectionOpened(stats.Cluster, stats.Endpoint)
		p.forward(client, upstream, ep, &stats)
		ep.Release()
	}
	client.Close()
	stats.Duration = time.Since(accepted)
	p.metrics.ConnectionClosed(stats)
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		p.log.Debug("connection closed", "cluster", stats.Cluster, "endpoint", stats.Endpoint,
			"client", client.RemoteAddr().String(), "outcome", string(stats.Outcome), "attempts", stats.Attempts,
			"bytes_to_upstream", stats.BytesToUpstream, "bytes_to_client", stats.BytesToClient,
			"duration", stats.Duration)
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
	for range p.retries + 1 {
		if p.cutCtx.Err() != nil {
			stats.Outcome = OutcomeShutdown
			return nil, nil
		}
		// A fresh snapshot for every attempt: a retry after a slow failure
		// should see the endpoints the checker evicted meanwhile.
		ep := pickUntried(cluster.Snapshot(), tried)
		if ep == nil {
			break
		}
		tried = append(tried, ep)
		stats.Attempts++
		// Count the connection on the endpoint while it is being dialled,
		// so least_request sees connections that are still being set up.
		ep.Acquire()
		conn, err := p.dialer.DialContext(p.cutCtx, "tcp", ep.Address())
		if err == nil {
			return conn, ep
		}
		ep.Release()
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

// pickUntried returns an endpoint of s not in tried, or nil. It asks the
// policy first and, should the policy keep choosing endpoints already tried
// (random may), falls back to the first untried routable endpoint so that a
// retry is never lost to bad luck.
func pickUntried(s *balancer.Snapshot, tried []*balancer.Endpoint) *balancer.Endpoint {
	for range 3 {
		ep := s.Pick()
		if ep == nil {
			return nil
		}
		if !slices.Contains(tried, ep) {
			return ep
		}
	}
	for _, w := range s.Routable {
		if !slices.Contains(tried, w.Endpoint) {
			return w.Endpoint
		}
	}
	return nil
}

// Directions of a pair.
const (
	toUpstream = 0 // client → endpoint
	toClient   = 1 // endpoint → client
)

var directionNames = [2]string{"to_upstream", "to_client"}

var (
	// errIdle ends a copy when the pair carried no byte for IdleTimeout.
	errIdle = errors.New("idle timeout")
	// errStalled ends a copy whose destination accepted no data for
	// IdleTimeout.
	errStalled = errors.New("peer accepted no data within the idle timeout")
)

// pair is one client connection with its endpoint connection.
type pair struct {
	conns   [2]net.Conn // indexed by the direction that reads from it: client, upstream
	results chan copyResult

	// Idle tracking, used only with an idle timeout. Times are nanoseconds
	// since start.
	idle, window time.Duration
	start        time.Time
	quiet        [2]quietState // per direction
}

// quietState is what one direction knows about its own traffic.
type quietState struct {
	// since is when this direction last moved a byte, as far as it knows:
	// the end of the last copy window that made progress (or the start).
	since atomic.Int64
	// checked is the end of the last window this direction completed:
	// nothing moved between since and checked. math.MaxInt64 once the
	// direction is finished, since it will never move a byte again.
	checked atomic.Int64
}

type copyResult struct {
	dir int
	n   int64
	err error // nil: the source sent FIN and it was forwarded
}

// forward copies between client and upstream until both directions are
// done, the pair is cut, or it idles out, and closes both.
func (p *Proxy) forward(client, upstream net.Conn, ep *balancer.Endpoint, stats *ConnStats) {
	pr := &pair{
		conns:   [2]net.Conn{client, upstream},
		results: make(chan copyResult, 2),
		idle:    p.idleTimeout,
		// Four windows per idle period: a pair is closed at most a quarter
		// of the idle timeout late, for four timer updates per direction
		// per idle period.
		window: max(p.idleTimeout/4, time.Millisecond),
		start:  time.Now(),
	}
	go pr.copy(toUpstream)
	go pr.copy(toClient)

	epClosed, cut := ep.Closed(), p.cutCtx.Done()
	for pending := 2; pending > 0; {
		select {
		case r := <-pr.results:
			pending--
			if r.dir == toUpstream {
				stats.BytesToUpstream = r.n
			} else {
				stats.BytesToClient = r.n
			}
			if r.err == nil || stats.Outcome != "" {
				continue
			}
			if errors.Is(r.err, errIdle) || errors.Is(r.err, errStalled) {
				stats.Outcome = OutcomeIdleTimeout
				if p.log.Enabled(context.Background(), slog.LevelDebug) {
					p.log.Debug("closing idle connection", "cluster", stats.Cluster, "endpoint", stats.Endpoint,
						"client", client.RemoteAddr().String(), "reason", r.err.Error(), "direction", directionNames[r.dir])
				}
				client.Close()
				upstream.Close()
			} else {
				stats.Outcome = OutcomeError
				abort(client)
				abort(upstream)
			}
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
}

// copy runs one direction and reports it on pr.results.
func (pr *pair) copy(dir int) {
	src, dst := pr.conns[dir], pr.conns[1-dir]
	n, err := pr.pump(dir, dst, src)
	if err == nil {
		// Forward the FIN and keep the other direction going.
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	pr.results <- copyResult{dir: dir, n: n, err: err}
}

// pump copies src to dst until src's EOF (nil error), an error, or the
// pair's idle timeout.
//
// io.Copy between two *net.TCPConn splices, and splice honours read
// deadlines without losing data (a read timeout fires only while nothing is
// in flight). So with an idle timeout each io.Copy runs under a read
// deadline one window away; when it returns on that deadline the direction
// records whether it moved bytes, and the pair is closed once both
// directions have seen no byte over a span of IdleTimeout.
//
// A write deadline guards against a peer that stops reading while the
// proxy has data for it. That deadline must end the pair: a write timeout
// inside splice drops the bytes already taken from src. Read timeouts fire
// one window after the deadlines were set and write timeouts IdleTimeout
// later than that, so a timeout seen IdleTimeout+window after arming is
// treated as a stall. Only a goroutine kept off the CPU for a whole
// IdleTimeout could make a read timeout look like a stall, and then the
// pair is closed, never corrupted.
func (pr *pair) pump(dir int, dst, src net.Conn) (int64, error) {
	if pr.idle <= 0 {
		return io.Copy(dst, src)
	}
	q := &pr.quiet[dir]
	var total int64
	for {
		armed := time.Now()
		src.SetReadDeadline(armed.Add(pr.window))
		dst.SetWriteDeadline(armed.Add(pr.idle + pr.window))
		n, err := io.Copy(dst, src)
		total += n
		now := time.Now()
		at := int64(now.Sub(pr.start))
		if n > 0 {
			q.since.Store(at)
		}
		if err == nil {
			q.since.Store(at)
			q.checked.Store(math.MaxInt64)
			return total, nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return total, err
		}
		if now.Sub(armed) >= pr.idle+pr.window {
			return total, errStalled
		}
		q.checked.Store(at)
		if pr.quietFor() >= pr.idle {
			return total, errIdle
		}
	}
}

// quietFor is the longest span both directions know to have carried
// nothing: from the later of their last progress to the earlier of their
// last completed window.
func (pr *pair) quietFor() time.Duration {
	from := max(pr.quiet[toUpstream].since.Load(), pr.quiet[toClient].since.Load())
	to := min(pr.quiet[toUpstream].checked.Load(), pr.quiet[toClient].checked.Load())
	return time.Duration(to - from)
}

// abort closes c with a reset rather than a FIN, so its peer learns that the
// stream was cut rather than complete.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
