package metrics

import (
	"google.golang.org/grpc/codes"

	dto "github.com/prometheus/client_model/go"
)

// ClusterTraffic counts the RPCs a cluster's grpc listeners forwarded
// since vigil started.
type ClusterTraffic struct {
	// RPCs counts every finished RPC; Failed those that ended with a code
	// other than OK.
	RPCs, Failed uint64
}

// Traffic returns what vigil_upstream_rq_total holds for one cluster, and
// false for a cluster no RPC has reached yet. It reads the counters the
// data path increments, so it costs the data path nothing: the status
// page samples it a few times a minute to draw rates.
func (m *Metrics) Traffic(cluster string) (ClusterTraffic, bool) {
	v, ok := m.clusters.Load(cluster)
	if !ok {
		return ClusterTraffic{}, false
	}
	cs := v.(*clusterSeries)
	var t ClusterTraffic
	var d dto.Metric
	add := func(rs *routeSeries) {
		for i := range rs.codes {
			p := rs.codes[i].p.Load()
			if p == nil {
				continue
			}
			d.Reset()
			if err := (*p).Write(&d); err != nil || d.Counter == nil {
				continue
			}
			n := uint64(d.Counter.GetValue())
			t.RPCs += n
			if i != int(codes.OK) {
				t.Failed += n
			}
		}
	}
	add(cs.rq)
	cs.routes.Range(func(_, v any) bool {
		add(v.(*routeSeries))
		return true
	})
	return t, true
}
