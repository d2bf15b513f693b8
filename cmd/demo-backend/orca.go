package main

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	v3orcapb "github.com/cncf/xds/go/xds/data/orca/v3"
	v3orcaservicepb "github.com/cncf/xds/go/xds/service/orca/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/orca"
)

// Load reports (-orca): the backend serves ORCA's OpenRcaService
// (gRFC A51), reporting the utilization and qps it is told (flags, or
// POST /load on the control endpoint) rather than measured ones, so that
// a demo or a test decides what each backend claims.
//
// grpc-go's own service (orca.Register) never reports more often than
// every 30 s, whatever the client asks, and lowering that minimum is
// reserved to grpc-go's own tests. With -orca-min-interval 30s or more
// the backend uses it; below, a small service of its own sends the same
// recorder's metrics at the interval the client asks for (at least the
// minimum), so that a demo or a test sees changes within seconds.

// grpcORCAMinInterval is grpc-go's floor for out-of-band reports.
const grpcORCAMinInterval = 30 * time.Second

// registerORCA registers the ORCA service on s, reporting from smr.
func registerORCA(s *grpc.Server, smr orca.ServerMetricsRecorder, minInterval time.Duration) error {
	if minInterval >= grpcORCAMinInterval {
		return orca.Register(s, orca.ServiceOptions{ServerMetricsProvider: smr, MinReportingInterval: minInterval})
	}
	v3orcaservicepb.RegisterOpenRcaServiceServer(s, &fastORCA{smr: smr, min: minInterval})
	return nil
}

// fastORCA is StreamCoreMetrics at any interval of at least min.
type fastORCA struct {
	v3orcaservicepb.UnimplementedOpenRcaServiceServer
	smr orca.ServerMetricsProvider
	min time.Duration
}

func (f *fastORCA) StreamCoreMetrics(req *v3orcaservicepb.OrcaLoadReportRequest, stream grpc.ServerStreamingServer[v3orcapb.OrcaLoadReport]) error {
	interval := max(req.GetReportInterval().AsDuration(), f.min)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		if err := stream.Send(loadReport(f.smr.ServerMetrics())); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-ticker.C:
		}
	}
}

// loadReport is sm as an OrcaLoadReport; unset values (negative) are
// left out, as grpc-go's service does.
func loadReport(sm *orca.ServerMetrics) *v3orcapb.OrcaLoadReport {
	set := func(v float64) float64 { return max(v, 0) }
	return &v3orcapb.OrcaLoadReport{
		CpuUtilization:         set(sm.CPUUtilization),
		MemUtilization:         set(sm.MemUtilization),
		ApplicationUtilization: set(sm.AppUtilization),
		RpsFractional:          set(sm.QPS),
		Eps:                    set(sm.EPS),
		Utilization:            sm.Utilization,
		RequestCost:            sm.RequestCost,
		NamedMetrics:           sm.NamedMetrics,
	}
}

// loadState is what the backend reports, set by flags and POST /load.
type loadState struct {
	mu  sync.Mutex
	smr orca.ServerMetricsRecorder
	// utilization and qps as last set.
	utilization, qps float64
}

func newLoadState(utilization, qps float64) *loadState {
	l := &loadState{smr: orca.NewServerMetricsRecorder()}
	l.set(utilization, qps)
	return l
}

func (l *loadState) set(utilization, qps float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.utilization, l.qps = utilization, qps
	l.smr.SetApplicationUtilization(utilization)
	l.smr.SetCPUUtilization(utilization)
	l.smr.SetQPS(qps)
}

func (l *loadState) get() (utilization, qps float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.utilization, l.qps
}

// loadBody is the body of GET and POST /load.
type loadBody struct {
	ID          string  `json:"id"`
	Utilization float64 `json:"utilization"`
	QPS         float64 `json:"qps"`
}

func (b *backend) getLoad(w http.ResponseWriter, _ *http.Request) {
	if b.load == nil {
		http.Error(w, "no load reports (-orca is off)", http.StatusConflict)
		return
	}
	u, q := b.load.get()
	writeJSON(w, loadBody{ID: b.id, Utilization: u, QPS: q})
}

// postLoad sets the reported load: POST /load?utilization=0.8[&qps=100].
func (b *backend) postLoad(w http.ResponseWriter, r *http.Request) {
	if b.load == nil {
		http.Error(w, "no load reports (-orca is off)", http.StatusConflict)
		return
	}
	u, q := b.load.get()
	for name, to := range map[string]*float64{"utilization": &u, "qps": &q} {
		v := r.FormValue(name)
		if v == "" {
			continue
		}
		x, err := strconv.ParseFloat(v, 64)
		if err != nil || x < 0 {
			http.Error(w, fmt.Sprintf("%s %q: want a number from 0 up", name, v), http.StatusBadRequest)
			return
		}
		*to = x
	}
	b.load.set(u, q)
	b.log.Info("reported load changed", "utilization", u, "qps", q, "by", "control "+r.RemoteAddr)
	writeJSON(w, loadBody{ID: b.id, Utilization: u, QPS: q})
}
