package checker

import (
	"context"
	"log/slog"
	"time"

	v3orcapb "github.com/cncf/xds/go/xds/data/orca/v3"
	v3orcaservicepb "github.com/cncf/xds/go/xds/service/orca/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/vigil-proxy/vigil/checker/internal/probeconn"
)

// Load reports (gRFC A51, out of band): with Group.SetLoadReports, every
// endpoint keeps one xds.service.orca.v3.OpenRcaService/StreamCoreMetrics
// stream open, asking for a report every period, and each report goes to
// GroupOptions.OnLoadReport.
//
//   - The stream runs on the endpoint's probe connection (modes check and
//     watch), next to its probes: it never dials, and waits while the
//     prober has no READY connection (looking again after 100 ms,
//     doubling up to a second). In modes tcp and none there is no
//     probe connection, so the stream has one of its own.
//   - Reports never change health: a broken stream counts no failure
//     (the health check decides transport failures). It is re-opened
//     after a backoff from 100 ms doubling up to the period, reset by
//     every report. A stream with no report for two periods plus the
//     timeout is given up and re-opened, as is one whose connection
//     stopped being READY (a graceful GOAWAY: the backend's GracefulStop
//     then waits at most one period for vigil).
//   - UNIMPLEMENTED (a backend without the ORCA service) is logged once
//     per endpoint and not retried until the probe connection is a new
//     one (the backend may have been redeployed), or after
//     unimplementedRetry.
//
// The stream is its own goroutine per endpoint, started and stopped with
// the endpoint, and by SetLoadReports and Reconfigure.

// LoadReport is what one ORCA load report (xds.data.orca.v3.OrcaLoadReport)
// says about the backend's load.
type LoadReport struct {
	CPUUtilization         float64
	ApplicationUtilization float64
	MemUtilization         float64
	// QPS and EPS are queries and errors per second (rps_fractional, eps).
	QPS, EPS float64
}

func loadReportOf(r *v3orcapb.OrcaLoadReport) LoadReport {
	return LoadReport{
		CPUUtilization:         r.GetCpuUtilization(),
		ApplicationUtilization: r.GetApplicationUtilization(),
		MemUtilization:         r.GetMemUtilization(),
		QPS:                    r.GetRpsFractional(),
		EPS:                    r.GetEps(),
	}
}

// unimplementedRetry is how long a stream the backend answered with
// UNIMPLEMENTED waits before trying again on the same connection.
const unimplementedRetry = 5 * time.Minute

// Logged once per endpoint.
const msgNoLoadReports = "endpoint does not serve ORCA load reports, weighing it by the mean"

// SetLoadReports starts (period > 0) or stops (0) the load-report stream
// of every endpoint of the group, and of the ones added later. A change of
// period re-opens every stream with the new one.
func (g *Group) SetLoadReports(period time.Duration) {
	g.ctlMu.Lock()
	defer g.ctlMu.Unlock()
	if g.closed || period == g.loadPeriod {
		return
	}
	g.loadPeriod = period
	g.mu.RLock()
	eps := g.listLocked()
	cfg := g.cfg
	g.mu.RUnlock()
	stopLoads(eps)
	for _, ep := range eps {
		g.startLoad(ep, cfg)
	}
}

// startLoad starts ep's load-report stream if load reports are on;
// g.ctlMu must be held and no stream of ep may be running.
func (g *Group) startLoad(ep *endpoint, cfg Config) {
	if g.loadPeriod <= 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	ep.loadCancel, ep.loadDone = cancel, make(chan struct{})
	l := &loadStreamer{g: g, ep: ep, cfg: cfg, period: g.loadPeriod, own: cfg.Mode == ModeTCP || cfg.Mode == ModeNone}
	go l.run(ctx)
}

// stopLoads stops the load-report streams of eps and waits for them:
// all are told first, then waited for.
func stopLoads(eps []*endpoint) {
	for _, ep := range eps {
		if ep.loadCancel != nil {
			ep.loadCancel()
		}
	}
	for _, ep := range eps {
		if ep.loadCancel != nil {
			<-ep.loadDone
			ep.loadCancel, ep.loadDone = nil, nil
		}
	}
}

// loadStreamer is one endpoint's load-report goroutine.
type loadStreamer struct {
	g      *Group
	ep     *endpoint
	cfg    Config
	period time.Duration
	// own: the streamer dials a connection of its own (modes tcp and
	// none); conn is it, nil until needed.
	own  bool
	conn *probeconn.Conn
}

func (l *loadStreamer) run(ctx context.Context) {
	defer close(l.ep.loadDone)
	defer l.dropConn()
	bo := newWatchBackoff(l.period)
	// Waiting for the prober's connection backs off to a second at most:
	// the first probe of a new endpoint may take a moment, and its first
	// report should not wait a period for it.
	connWait := newWatchBackoff(min(l.period, time.Second))
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	sleep := func(d time.Duration) bool {
		timer.Reset(d)
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		}
	}
	for {
		conn := l.connection()
		if conn == nil {
			// The prober has no READY connection now: it is dialing, or
			// the endpoint is down; health deals with that.
			if !sleep(connWait.next()) {
				return
			}
			continue
		}
		connWait.reset()
		got, err := l.stream(ctx, conn)
		if ctx.Err() != nil {
			return
		}
		if got {
			bo.reset()
		}
		if status.Code(err) == codes.Unimplemented {
			l.unimplemented()
			if !l.waitNewConn(ctx, conn, sleep) {
				return
			}
			continue
		}
		if l.own && conn.GetState() != connectivity.Ready {
			l.dropConn()
		}
		if !sleep(bo.next()) {
			return
		}
	}
}

// connection is the connection to stream on: the prober's, if it is
// READY, or the streamer's own; nil when there is none to use now.
func (l *loadStreamer) connection() *probeconn.Conn {
	if !l.own {
		c := l.ep.shared.Load()
		if c == nil || c.GetState() != connectivity.Ready {
			return nil
		}
		return c
	}
	if l.conn != nil && l.conn.GetState() == connectivity.TransientFailure {
		l.dropConn()
	}
	if l.conn == nil {
		l.conn = probeconn.New(l.ep.address, probeOptions(l.cfg))
	}
	return l.conn
}

func (l *loadStreamer) dropConn() {
	if l.conn != nil {
		_ = l.conn.Close()
		l.conn = nil
	}
}

// waitNewConn waits, after UNIMPLEMENTED on conn, until the endpoint's
// probe connection is another one (checked every period), or for
// unimplementedRetry; false if ctx ended.
func (l *loadStreamer) waitNewConn(ctx context.Context, conn *probeconn.Conn, sleep func(time.Duration) bool) bool {
	if l.own {
		l.dropConn()
		return sleep(unimplementedRetry)
	}
	deadline := time.Now().Add(unimplementedRetry)
	for time.Now().Before(deadline) {
		if !sleep(l.period) {
			return false
		}
		if c := l.ep.shared.Load(); c != nil && c != conn {
			return true
		}
	}
	return ctx.Err() == nil
}

func (l *loadStreamer) unimplemented() {
	if l.ep.warnedNoLoadReports {
		return
	}
	l.ep.warnedNoLoadReports = true
	l.g.logger.LogAttrs(context.Background(), slog.LevelWarn, msgNoLoadReports,
		slog.String("cluster", l.g.cluster), slog.String("endpoint", l.ep.address),
		slog.String("reason", reasonUnimplemented),
		slog.String("hint", "register the ORCA service on the backend (grpc-go: orca.Register) for load-aware weights"))
}

// stream runs one StreamCoreMetrics stream on conn until it ends; got
// reports whether a report arrived.
func (l *loadStreamer) stream(ctx context.Context, conn *probeconn.Conn) (got bool, err error) {
	if l.own {
		release, ok := setupSlot(ctx, conn)
		if !ok {
			return false, ctx.Err()
		}
		defer release()
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A stream that goes quiet is given up: the backend may have stopped
	// sending without ending it, or a blackhole ate the connection.
	quiet := 2*l.period + l.cfg.Timeout
	stall := time.AfterFunc(quiet, cancel)
	defer stall.Stop()

	req := &v3orcaservicepb.OrcaLoadReportRequest{ReportInterval: durationpb.New(l.period)}
	stream, err := v3orcaservicepb.NewOpenRcaServiceClient(conn).StreamCoreMetrics(sctx, req)
	for err == nil {
		var r *v3orcapb.OrcaLoadReport
		if r, err = stream.Recv(); err != nil {
			break
		}
		stall.Reset(quiet)
		got = true
		if l.g.onLoadReport != nil {
			l.g.onLoadReport(l.ep.address, loadReportOf(r))
		}
		if conn.GetState() != connectivity.Ready {
			// A GOAWAY came: move to the next connection rather than
			// hold the backend's graceful stop.
			break
		}
	}
	return got, err
}
