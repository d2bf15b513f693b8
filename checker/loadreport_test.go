package checker

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v3orcapb "github.com/cncf/xds/go/xds/data/orca/v3"
	v3orcaservicepb "github.com/cncf/xds/go/xds/service/orca/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/orca"
	"google.golang.org/grpc/status"
)

// fastORCA serves StreamCoreMetrics at the interval the client asks for
// (grpc-go's own service sends at most every 30 s), with the load set by
// set; failAfter > 0 ends every stream after that many reports.
type fastORCA struct {
	v3orcaservicepb.UnimplementedOpenRcaServiceServer
	mu        sync.Mutex
	load      *v3orcapb.OrcaLoadReport
	interval  time.Duration // the latest interval asked for
	streams   atomic.Int32
	open      atomic.Int32
	failAfter int
}

func (f *fastORCA) set(cpu, qps float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.load = &v3orcapb.OrcaLoadReport{CpuUtilization: cpu, RpsFractional: qps}
}

func (f *fastORCA) StreamCoreMetrics(req *v3orcaservicepb.OrcaLoadReportRequest, stream grpc.ServerStreamingServer[v3orcapb.OrcaLoadReport]) error {
	f.streams.Add(1)
	f.open.Add(1)
	defer f.open.Add(-1)
	d := req.GetReportInterval().AsDuration()
	f.mu.Lock()
	f.interval = d
	f.mu.Unlock()
	for sent := 0; ; sent++ {
		if f.failAfter > 0 && sent == f.failAfter {
			return status.Error(codes.Unavailable, "going away")
		}
		f.mu.Lock()
		load := f.load
		f.mu.Unlock()
		if err := stream.Send(load); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-time.After(d):
		}
	}
}

// countingListener counts the connections accepted.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// orcaBackend serves health (SERVING) and, unless orcaSrv is nil, the
// ORCA service register adds.
func orcaBackend(t *testing.T, register func(*grpc.Server), opts ...grpc.ServerOption) (string, *countingListener) {
	t.Helper()
	lis := &countingListener{Listener: listen(t, "")}
	srv := grpc.NewServer(opts...)
	healthgrpc.RegisterHealthServer(srv, health.NewServer())
	if register != nil {
		register(srv)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), lis
}

// reports collects the load reports a group delivers.
type reports struct {
	mu   sync.Mutex
	list []LoadReport
}

func (r *reports) add(_ string, lr LoadReport) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, lr)
}

func (r *reports) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.list)
}

func (r *reports) last() LoadReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.list[len(r.list)-1]
}

func TestLoadReportsOnTheProbeConnection(t *testing.T) {
	for _, mode := range []Mode{ModeCheck, ModeWatch} {
		t.Run(string(mode), func(t *testing.T) {
			f := &fastORCA{}
			f.set(0.25, 100)
			addr, lis := orcaBackend(t, func(s *grpc.Server) { v3orcaservicepb.RegisterOpenRcaServiceServer(s, f) })
			var got reports
			g := NewGroup(fastConfig(mode), GroupOptions{Cluster: "c", Logger: discardLogger(), OnLoadReport: got.add})
			t.Cleanup(g.Close)
			g.SetLoadReports(100 * time.Millisecond)
			g.Add(addr, Status{Health: Pending})
			waitFor(t, "3 reports", func() bool { return got.count() >= 3 })
			if lr := got.last(); lr.CPUUtilization != 0.25 || lr.QPS != 100 {
				t.Errorf("report = %+v, want cpu 0.25 qps 100", lr)
			}
			f.set(0.5, 80)
			waitFor(t, "the new load", func() bool { return got.last().CPUUtilization == 0.5 })
			f.mu.Lock()
			interval := f.interval
			f.mu.Unlock()
			if interval != 100*time.Millisecond {
				t.Errorf("interval asked = %v, want 100ms", interval)
			}
			if n := lis.n.Load(); n != 1 {
				t.Errorf("%d connections to the backend, want 1 (probes and load reports share it)", n)
			}
			g.Remove(addr)
			waitFor(t, "the stream to end with the endpoint", func() bool { return f.open.Load() == 0 })
		})
	}
}

// TestLoadReportsOwnConnection: in mode none there is no probe
// connection; the stream has one of its own. The backend is grpc-go's
// own ORCA service, which sends its first report at once.
func TestLoadReportsOwnConnection(t *testing.T) {
	smr := orca.NewServerMetricsRecorder()
	smr.SetApplicationUtilization(0.4)
	smr.SetCPUUtilization(0.9)
	smr.SetQPS(42)
	smr.SetEPS(2)
	addr, _ := orcaBackend(t, func(s *grpc.Server) {
		if err := orca.Register(s, orca.ServiceOptions{ServerMetricsProvider: smr}); err != nil {
			t.Fatal(err)
		}
	})
	var got reports
	g := NewGroup(fastConfig(ModeNone), GroupOptions{Cluster: "c", Logger: discardLogger(), OnLoadReport: got.add})
	t.Cleanup(g.Close)
	g.Add(addr, Status{Health: Pending})
	g.SetLoadReports(time.Second)
	waitFor(t, "the first report", func() bool { return got.count() >= 1 })
	want := LoadReport{CPUUtilization: 0.9, ApplicationUtilization: 0.4, QPS: 42, EPS: 2}
	if lr := got.last(); lr != want {
		t.Errorf("report = %+v, want %+v", lr, want)
	}
	g.SetLoadReports(0) // stops the stream; goleak checks its goroutine
}

// TestLoadReportStreamBreaks: a stream the backend ends is re-opened, and
// counts no failure against the endpoint's health.
func TestLoadReportStreamBreaks(t *testing.T) {
	f := &fastORCA{failAfter: 1}
	f.set(0.5, 10)
	addr, _ := orcaBackend(t, func(s *grpc.Server) { v3orcaservicepb.RegisterOpenRcaServiceServer(s, f) })
	var got reports
	g := NewGroup(fastConfig(ModeCheck), GroupOptions{Cluster: "c", Logger: discardLogger(), OnLoadReport: got.add})
	t.Cleanup(g.Close)
	g.SetLoadReports(100 * time.Millisecond)
	g.Add(addr, Status{Health: Pending})
	waitFor(t, "4 streams", func() bool { return f.streams.Load() >= 4 })
	if n := got.count(); n < 3 {
		t.Errorf("%d reports over 4 streams, want at least 3", n)
	}
	st, _ := g.Status(addr)
	if st.Health != Healthy || st.Failures != 0 {
		t.Errorf("status = %+v, want healthy with no failure", st)
	}
}

// TestLoadReportsUnimplemented: a backend without ORCA is logged once and
// asked again only on a new connection, not in a loop.
func TestLoadReportsUnimplemented(t *testing.T) {
	var calls atomic.Int32
	unknown := grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		if m, _ := grpc.MethodFromServerStream(stream); m == v3orcaservicepb.OpenRcaService_StreamCoreMetrics_FullMethodName {
			calls.Add(1)
		}
		return status.Error(codes.Unimplemented, "unknown service")
	})
	addr, _ := orcaBackend(t, nil, unknown)
	logger, sink := newLogger()
	var probes atomic.Int32
	g := NewGroup(fastConfig(ModeCheck), GroupOptions{Cluster: "c", Logger: logger,
		OnProbe: func(string, Result) { probes.Add(1) }})
	t.Cleanup(g.Close)
	g.SetLoadReports(100 * time.Millisecond)
	g.Add(addr, Status{Health: Pending})
	waitFor(t, "the ORCA call", func() bool { return calls.Load() >= 1 })
	// 100 probes at 20 ms take 2 s: twenty periods of the stream.
	from := probes.Load()
	waitFor(t, "100 more probes", func() bool { return probes.Load() >= from+100 })
	if n := calls.Load(); n != 1 {
		t.Errorf("%d StreamCoreMetrics calls, want 1 (no retry on the same connection)", n)
	}
	recs := sink.withMsg(t, msgNoLoadReports)
	if len(recs) != 1 || recs[0]["endpoint"] != addr || recs[0]["reason"] != "UNIMPLEMENTED" {
		t.Errorf("records %q = %v, want one for %s", msgNoLoadReports, recs, addr)
	}
	if st, _ := g.Status(addr); st.Health != Healthy {
		t.Errorf("status = %+v, want healthy: load reports do not decide health", st)
	}
}
