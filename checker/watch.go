package checker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-proxy/vigil/checker/internal/probeconn"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// Watch mode keeps one grpc.health.v1.Health/Watch stream open per endpoint
// on its probe connection:
//
//   - Every status pushed takes effect at once (Result.Pushed): SERVING
//     admits or readmits with no healthy-threshold wait, anything else
//     evicts with that status as reason.
//   - A stream that ends (in any way but UNIMPLEMENTED, even OK) or breaks
//     is re-opened after an exponential backoff with jitter, from 100 ms
//     (or the interval, if shorter) doubling up to the interval. An attempt
//     that fails before its first message counts as one failure, classified
//     like a Check error: usually transport (refused, timeout), counted
//     toward the unhealthy threshold; a non-OK status the backend answered
//     (PERMISSION_DENIED, ...) is authoritative as in check mode. An
//     attempt with no first message within the timeout fails with
//     DEADLINE_EXCEEDED. A first message resets the backoff.
//   - Watch UNIMPLEMENTED is not retried: the endpoint falls back to Check
//     polling, logged once per endpoint, and a backend with no health
//     service at all then follows on_unimplemented through Check.
//   - Liveness: a Watch is silent while nothing changes, so a backend that
//     vanishes without closing its connection (a blackhole, a powered-off
//     host) would go unnoticed. By default the probe connection's TCP
//     keepalive (keepalive.go) proves it alive at no cost to the process:
//     when the kernel gives up on the connection (ETIMEDOUT) the endpoint
//     is evicted at once (reason DEADLINE_EXCEEDED, cause transport, so it
//     stays panic-eligible) and the stream re-opened on a new connection.
//     Keepalive cannot see past a userspace proxy that keeps the TCP
//     connection up while the backend behind it is gone, nor a frozen
//     process whose kernel still answers; with Config.Liveness check
//     (liveness: check) a Check with the timeout also runs on the same
//     connection every interval while no status arrived, and a transport
//     failure of it while the connection still claims to be READY evicts
//     at once in the same way. Either way the eviction comes within
//     interval + timeout of the backend going silent (keepalive counts in
//     whole seconds). The Check's answer itself is ignored: the stream is
//     the authority on health. HTTP/2 keepalive pings are not used: a
//     default grpc-go server answers pings more frequent than every 5
//     minutes with GOAWAY too_many_pings.
//   - A connection that visibly goes away (a graceful GOAWAY, a reset) is
//     no reason to evict at once: the stream is re-opened on a new
//     connection and the attempts count as above. A graceful GOAWAY leaves
//     an open stream running on the old connection, and the server's
//     GracefulStop waiting for it: the liveness tick notices that the
//     connection left READY and moves the stream, so a backend's graceful
//     stop waits at most one interval for vigil.

// watchBackoff is the re-open delay of a Watch stream.
type watchBackoff struct {
	base, cap, cur time.Duration
}

func newWatchBackoff(interval time.Duration) watchBackoff {
	return watchBackoff{base: min(100*time.Millisecond, interval), cap: interval}
}

func (b *watchBackoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.base
	} else {
		b.cur = min(2*b.cur, b.cap)
	}
	return min(jittered(b.cur, 0.2), b.cap)
}

func (b *watchBackoff) reset() { b.cur = 0 }

// streamEnd says how a Watch stream ended.
type streamEnd uint8

const (
	// endStopping: the prober is stopping.
	endStopping streamEnd = iota
	// endEnded: the stream delivered statuses, then ended or broke, or its
	// connection was draining; re-open without counting a failure.
	endEnded
	// endFailed: the attempt failed before its first status; the outcome's
	// result counts.
	endFailed
	// endDead: the liveness Check found the connection dead; the outcome's
	// result (pushed) evicts at once.
	endDead
	// endUnimplemented: the backend does not implement Watch.
	endUnimplemented
)

// watch runs Watch streams until ctx ends or the backend turns out not to
// implement Watch, in which case it falls back to polling with Check.
func (p *prober) watch(ctx context.Context) {
	bo := newWatchBackoff(p.cfg.Interval)
	req := &healthpb.HealthCheckRequest{Service: p.cfg.Service}
	for {
		end, r, gotStatus := p.watchStream(ctx, req)
		if gotStatus {
			bo.reset()
		}
		switch end {
		case endStopping:
			return
		case endUnimplemented:
			p.fallBackToCheck()
			p.poll(ctx)
			return
		case endFailed, endDead:
			p.g.report(p.ep, p.mode, p.cfg, r)
		}
		if !p.sleep(ctx, bo.next()) {
			return
		}
	}
}

func (p *prober) fallBackToCheck() {
	p.mode = ModeCheck
	if p.ep.warnedNoWatch {
		return
	}
	p.ep.warnedNoWatch = true
	p.g.logger.LogAttrs(context.Background(), slog.LevelWarn, msgWatchFallback,
		slog.String("cluster", p.g.cluster), slog.String("endpoint", p.ep.address),
		slog.String("check", string(ModeWatch)), slog.String("reason", reasonUnimplemented))
}

// watchStream opens one Watch stream and applies every status it pushes
// until it ends. gotStatus reports that at least one status arrived.
func (p *prober) watchStream(ctx context.Context, req *healthpb.HealthCheckRequest) (end streamEnd, r Result, gotStatus bool) {
	conn := p.connection()
	release, ok := setupSlot(ctx, conn)
	if !ok {
		return endStopping, Result{}, false
	}
	defer release()
	sctx, cancel := context.WithCancel(ctx)
	lv := &liveness{p: p, conn: conn, ctx: sctx, cancel: cancel}
	lv.mu.Lock()
	lv.arm(p.cfg.Timeout) // the first status must come within the timeout
	lv.mu.Unlock()

	stream, err := healthpb.NewHealthClient(conn).Watch(sctx, req)
	for err == nil {
		var resp *healthpb.HealthCheckResponse
		if resp, err = stream.Recv(); err != nil {
			break
		}
		lv.received()
		release()
		gotStatus = true
		r := classifyStatus(resp.GetStatus())
		r.Pushed = true
		p.g.report(p.ep, p.mode, p.cfg, r)
	}
	cancel()
	lv.stop()

	switch {
	case ctx.Err() != nil:
		return endStopping, Result{}, gotStatus
	case lv.dead != nil:
		p.dropConn()
		return endDead, *lv.dead, gotStatus
	case lv.connLeft:
		return endEnded, Result{}, gotStatus
	case diedOfKeepalive(err):
		// The kernel gave up on the connection: the backend stopped
		// answering at the TCP level (keepalive.go). Like a failed
		// liveness Check, that evicts at once.
		p.dropConn()
		return endDead, Result{Reason: reasonDeadlineExceeded, Cause: CauseTransport, Pushed: true, Err: err}, gotStatus
	case gotStatus:
		return endEnded, Result{}, true
	case lv.noFirstStatus:
		p.dropConn()
		return endFailed, Result{Reason: reasonDeadlineExceeded, Cause: CauseTransport,
			Err: &ProbeError{Kind: KindTimeout, Status: status.New(codes.DeadlineExceeded, "watch: no status within the timeout")}}, false
	}
	if errors.Is(err, io.EOF) {
		// The server ended the stream with OK before sending anything.
		return endFailed, Result{Reason: reasonUnavailable, Cause: CauseTransport,
			Err: &ProbeError{Kind: KindMalformed, Status: status.New(codes.Unavailable, "watch: stream ended without a status")}}, false
	}
	r = ClassifyError(err)
	if r.Cause == CauseAnswer && r.Reason == reasonUnimplemented {
		return endUnimplemented, r, false
	}
	if r.Cause == CauseTransport {
		p.dropConn()
	}
	return endFailed, r, false
}

// liveness is the timer of one Watch stream: first the deadline of its
// first status, then a liveness Check every interval (see the Watch mode
// comment above). Its callback runs in the timer's goroutine; the stream's
// prober owns it and waits for it in stop.
type liveness struct {
	p      *prober
	conn   *probeconn.Conn
	ctx    context.Context // the stream's context
	cancel context.CancelFunc

	first    atomic.Bool
	lastRecv atomic.Int64 // UnixNano of the latest status

	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
	running sync.WaitGroup // one count per armed timer or running callback

	// Set by the callback before it cancels the stream; read by the
	// prober after stop.
	dead          *Result
	connLeft      bool
	noFirstStatus bool
}

// received notes a status. The first one switches the timer from the
// first-status deadline to the liveness period.
func (l *liveness) received() {
	l.lastRecv.Store(time.Now().UnixNano())
	if l.first.Swap(true) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timer.Stop() {
		l.running.Done()
		l.periodic()
	}
	// Otherwise the callback is running and goes on to periodic itself.
}

// periodic starts what watches an open stream: the liveness timer with
// liveness: check, the group's drain scan with keepalive; l.mu must be
// held.
func (l *liveness) periodic() {
	if l.p.cfg.Liveness == LivenessCheck {
		l.arm(l.p.cfg.Interval)
		return
	}
	if !l.stopped {
		l.p.g.drains.add(l)
	}
}

// arm schedules the callback after d; l.mu must be held.
func (l *liveness) arm(d time.Duration) {
	if l.stopped {
		return
	}
	l.running.Add(1)
	if l.timer == nil {
		l.timer = time.AfterFunc(d, l.fire)
	} else {
		l.timer.Reset(d)
	}
}

// stop cancels the timer, waits for a running callback and leaves the
// drain scan.
func (l *liveness) stop() {
	l.mu.Lock()
	l.stopped = true
	if l.timer != nil && l.timer.Stop() {
		l.running.Done() // armed, and will not fire
	}
	l.mu.Unlock()
	l.running.Wait()
	l.p.g.drains.remove(l)
}

func (l *liveness) fire() {
	defer l.running.Done()
	if l.ctx.Err() != nil {
		return
	}
	if !l.first.Load() {
		l.noFirstStatus = true
		l.cancel()
		return
	}
	if !(l.p.cfg.Liveness == LivenessCheck) {
		// The first status came just as its deadline fired.
		l.mu.Lock()
		l.periodic()
		l.mu.Unlock()
		return
	}
	interval := l.p.cfg.Interval
	if since := time.Since(time.Unix(0, l.lastRecv.Load())); since < interval {
		l.rearm(interval - since)
		return
	}
	if l.conn.GetState() != connectivity.Ready {
		// GOAWAY received (or the transport is gone): the stream lives on
		// a connection that is going away.
		l.connLeft = true
		l.cancel()
		return
	}
	r := CheckOnce(l.ctx, l.conn, l.p.cfg.Service, l.p.cfg.Timeout)
	if l.ctx.Err() != nil {
		return // the stream ended meanwhile; its end says what happened
	}
	if !r.OK && r.Cause == CauseTransport {
		if l.conn.GetState() != connectivity.Ready {
			// The connection went away visibly (GOAWAY or reset) while
			// the Check ran: re-open, and let the attempts count.
			l.connLeft = true
		} else {
			// Still READY but silent: a blackhole. Evict at once.
			r.Pushed = true
			l.dead = &r
		}
		l.cancel()
		return
	}
	l.rearm(interval)
}

func (l *liveness) rearm(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.arm(d)
}
