package checker

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
)

// prober probes one endpoint until its context ends. It is the endpoint's
// single writer while it runs.
type prober struct {
	g     *Group
	ep    *endpoint
	cfg   Config
	mode  Mode // the mode in use: a Watch prober may fall back to ModeCheck
	timer *time.Timer
}

func newProber(g *Group, ep *endpoint, cfg Config) *prober {
	return &prober{g: g, ep: ep, cfg: cfg, mode: cfg.Mode}
}

func (p *prober) run(ctx context.Context, firstDelay time.Duration) {
	defer close(p.ep.done)
	p.timer = time.NewTimer(firstDelay)
	defer p.timer.Stop()
	select {
	case <-ctx.Done():
		return
	case <-p.timer.C:
	}
	if p.mode == ModeWatch {
		p.watch(ctx)
		return
	}
	p.poll(ctx)
}

// poll probes every interval (with jitter), measured from the end of one
// probe to the start of the next, so probes of one endpoint never overlap.
func (p *prober) poll(ctx context.Context) {
	for {
		r := p.probe(ctx)
		if ctx.Err() != nil {
			return // a probe cut short by stopping is not a result
		}
		p.g.report(p.ep, p.mode, p.cfg, r)
		if !p.sleep(ctx, jittered(p.cfg.Interval, p.cfg.Jitter)) {
			return
		}
	}
}

// sleep waits d, or until ctx ends; it reports whether d elapsed.
func (p *prober) sleep(ctx context.Context, d time.Duration) bool {
	p.timer.Reset(d)
	select {
	case <-ctx.Done():
		p.timer.Stop()
		return false
	case <-p.timer.C:
		return true
	}
}

// jittered spreads d by +/- fraction j of it.
func jittered(d time.Duration, j float64) time.Duration {
	if j <= 0 {
		return d
	}
	f := 1 + j*(2*rand.Float64()-1)
	return max(time.Duration(float64(d)*f), time.Millisecond)
}

// probe runs one probe in the mode in use.
func (p *prober) probe(ctx context.Context) Result {
	if p.mode == ModeTCP {
		return TCPOnce(ctx, p.ep.address, p.cfg.Timeout)
	}
	return p.check(ctx)
}

// check runs one Check on the endpoint's probe connection and applies the
// on_unimplemented policy.
//
// After a transport failure the connection is dropped, and the next probe
// dials a new one. grpc-go would otherwise keep reconnecting in the
// background with its own backoff, and its pick_first policy reports
// TRANSIENT_FAILURE until a reconnect succeeds ("sticky"), so a probe
// right after a backend recovered would fail with the old error. A fresh
// connection makes every probe of a troubled endpoint a real connection
// attempt whose own outcome is the result, a recovered backend is seen at
// the next probe, and a down endpoint costs no connection between probes.
// It also gets rid of a blackholed connection that would otherwise keep
// timing out long after the path heals.
func (p *prober) check(ctx context.Context) Result {
	conn, err := p.connection()
	if err != nil {
		return Result{Reason: reasonUnavailable, Cause: CauseTransport, Err: err}
	}
	release, ok := setupSlot(ctx, conn)
	if !ok {
		return Result{} // stopping
	}
	r := CheckOnce(ctx, conn, p.cfg.Service, p.cfg.Timeout)
	release()
	if ctx.Err() != nil {
		return r
	}
	if !r.OK && r.Cause == CauseTransport {
		p.dropConn()
	}
	return p.unimplementedPolicy(r)
}

// unimplementedPolicy turns an UNIMPLEMENTED answer into a success under
// on_unimplemented: serve, warning once per endpoint.
func (p *prober) unimplementedPolicy(r Result) Result {
	if r.OK || r.Cause != CauseAnswer || r.Reason != reasonUnimplemented || !p.cfg.ServeUnimplemented {
		return r
	}
	if !p.ep.warnedUnimplemented {
		p.ep.warnedUnimplemented = true
		p.g.logger.LogAttrs(context.Background(), slog.LevelWarn, msgServedAnyway,
			slog.String("cluster", p.g.cluster), slog.String("endpoint", p.ep.address),
			slog.String("check", string(p.mode)), slog.String("reason", reasonUnimplemented),
			slog.String("hint", "on_unimplemented is serve: the endpoint takes traffic without being health-checked; register a grpc.health.v1 service on the backend to have it checked"))
	}
	return Result{OK: true, Latency: r.Latency}
}

// connection returns the endpoint's probe connection, creating it if
// needed. A connection in TRANSIENT_FAILURE is replaced (see check).
func (p *prober) connection() (*grpc.ClientConn, error) {
	if p.ep.conn != nil && p.ep.conn.GetState() == connectivity.TransientFailure {
		p.dropConn()
	}
	if p.ep.conn == nil {
		conn, err := grpc.NewClient("passthrough:///"+p.ep.address, p.g.probeDialOptions(p.cfg)...)
		if err != nil {
			return nil, fmt.Errorf("probe connection to %s: %w", p.ep.address, err)
		}
		p.ep.conn = conn
	}
	return p.ep.conn, nil
}

// maxSettingUp bounds the probe connections being set up at once in the
// process (dial, HTTP/2 handshake, first answer), across all groups. When
// thousands of endpoints start together, an unbounded burst of handshakes
// saturates the CPU, and the probes then time out because of vigil's own
// queueing, not the backends': 10,000 endpoints starting at once used to
// end in thousands of false DEADLINE_EXCEEDED evictions. A probe's timeout
// runs from the moment it has a slot. Probes on a READY connection take no
// slot, so a mass outage delays only other connection set-ups.
const maxSettingUp = 256

var settingUp = make(chan struct{}, maxSettingUp)

// setupSlot waits for a set-up slot when conn is not READY and returns its
// release (safe to call more than once), or false if ctx ended first.
func setupSlot(ctx context.Context, conn *grpc.ClientConn) (release func(), ok bool) {
	if conn.GetState() == connectivity.Ready {
		return func() {}, true
	}
	select {
	case settingUp <- struct{}{}:
	case <-ctx.Done():
		return nil, false
	}
	var once sync.Once
	return func() { once.Do(func() { <-settingUp }) }, true
}

func (p *prober) dropConn() {
	if p.ep.conn != nil {
		_ = p.ep.conn.Close()
		p.ep.conn = nil
	}
}

// Probe connections carry a few hundred bytes per interval: a fixed 64 KiB
// flow-control window (the minimum; it also turns off BDP estimation and
// its pings) and small receive limits, so that a misbehaving backend cannot
// make a probe hold megabytes. Their read and write buffers are grpc-go's
// defaults, which are pooled: an idle connection pins none, and a probe's
// frames go out in one write and come in with one read (unbuffered, every
// frame was a system call of its own: twice the CPU per Check).
const (
	probeWindow        = 64 << 10
	probeMaxHeaderList = 64 << 10
	probeMaxMessage    = 64 << 10
)

// probeDialOptions are the options of a probe connection. No HTTP/2
// keepalive is configured: a default grpc-go server answers pings more
// frequent than every 5 minutes with GOAWAY too_many_pings; liveness comes
// from the probes themselves and from TCP keepalive (keepalive.go).
func (g *Group) probeDialOptions(cfg Config) []grpc.DialOption {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(probeDialer(cfg)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  min(100*time.Millisecond, cfg.Interval),
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   cfg.Interval,
			},
			// Longer than the probe's own timeout, so that a backend which
			// accepts and never answers is always a probe that timed out
			// (DEADLINE_EXCEEDED), never a connection attempt that gave up
			// at the same moment (UNAVAILABLE). The attempt does not outlive
			// the probe: a failed probe closes its connection.
			MinConnectTimeout: cfg.Timeout + time.Second,
		}),
		grpc.WithInitialWindowSize(probeWindow),
		grpc.WithInitialConnWindowSize(probeWindow),
		grpc.WithMaxHeaderListSize(probeMaxHeaderList),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(probeMaxMessage)),
		grpc.WithDisableRetry(),
		grpc.WithDisableServiceConfig(),
		grpc.WithUserAgent("vigil-checker"),
	}
	return append(opts, g.dialOpts...)
}
