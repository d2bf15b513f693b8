package checker

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/vigil-proxy/vigil/checker/internal/probeconn"
	"google.golang.org/grpc/connectivity"
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
		return tcpOnce(ctx, p.ep.address, p.cfg.Timeout, p.cfg.TLS)
	}
	return p.check(ctx)
}

// check runs one Check on the endpoint's probe connection and applies the
// on_unimplemented policy.
//
// After a transport failure the connection is dropped, and the next probe
// dials a new one: every probe of a troubled endpoint is a real
// connection attempt whose own outcome is the result, a recovered backend
// is seen at the next probe, a down endpoint costs no connection between
// probes, and a blackholed connection that would keep timing out long
// after the path heals is gone.
func (p *prober) check(ctx context.Context) Result {
	conn := p.connection()
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
	if r.OK || r.Cause != CauseAnswer || r.Reason != reasonUnimplemented || p.cfg.OnUnimplemented != UnimplementedServe {
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
func (p *prober) connection() *probeconn.Conn {
	if p.ep.conn != nil && p.ep.conn.GetState() == connectivity.TransientFailure {
		p.dropConn()
	}
	if p.ep.conn == nil {
		p.ep.conn = probeconn.New(p.ep.address, probeOptions(p.cfg))
		p.ep.shared.Store(p.ep.conn)
	}
	return p.ep.conn
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
func setupSlot(ctx context.Context, conn *probeconn.Conn) (release func(), ok bool) {
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
		p.ep.shared.Store(nil)
		_ = p.ep.conn.Close()
		p.ep.conn = nil
	}
}

// Probe connections carry a few hundred bytes per interval: the minimum
// flow-control window (64 KiB) and small receive limits, so that a
// misbehaving backend cannot make a probe hold megabytes. No HTTP/2 PING
// is ever sent: a default grpc-go server answers pings more frequent than
// every 5 minutes with GOAWAY too_many_pings; liveness comes from the
// probes themselves and from TCP keepalive (keepalive.go).
const (
	probeWindow        = 64 << 10
	probeMaxHeaderList = 64 << 10
	probeMaxMessage    = 64 << 10
)

// probeOptions are the options of a probe connection for cfg.
func probeOptions(cfg Config) probeconn.Options {
	return probeconn.Options{
		Dial:           probeDialer(cfg),
		TLS:            cfg.TLS != nil,
		UserAgent:      "vigil-checker",
		MaxRecvMessage: probeMaxMessage,
		MaxHeaderList:  probeMaxHeaderList,
		Window:         probeWindow,
	}
}
