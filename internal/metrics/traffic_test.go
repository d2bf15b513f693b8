package metrics

import (
	"testing"
	"time"
)

func TestTrafficCountsRPCsAndFailures(t *testing.T) {
	m := New(Options{})
	if _, ok := m.Traffic("orders"); ok {
		t.Error("traffic of a cluster nothing reached")
	}
	h := m.GRPC("api")
	for _, code := range []string{"OK", "OK", "OK", "UNAVAILABLE", "CANCELLED", "garbage"} {
		h.RPCStarted("orders", "127.0.0.1:1")
		h.RPCFinished("orders", "", "127.0.0.1:1", code, time.Millisecond)
	}
	h.RPCFinished("payments", "", "", "UNAVAILABLE", 0) // no healthy upstream: no endpoint
	for _, tc := range []struct {
		cluster      string
		rpcs, failed uint64
	}{{"orders", 6, 3}, {"payments", 1, 1}} {
		got, ok := m.Traffic(tc.cluster)
		if !ok || got.RPCs != tc.rpcs || got.Failed != tc.failed {
			t.Errorf("Traffic(%s) = %+v, %v; want %d RPCs, %d failed", tc.cluster, got, ok, tc.rpcs, tc.failed)
		}
	}
}

// TestRouteLabel: the route label of vigil_upstream_rq_total and the
// latency histogram follows each RPC's route; Traffic adds them up; a
// routed RPC allocates nothing once its series exist.
func TestRouteLabel(t *testing.T) {
	m := New(Options{})
	h := m.GRPC("edge")
	for _, r := range []string{"orders", "orders", "1", ""} {
		h.RPCStarted("orders", "127.0.0.1:1")
		h.RPCFinished("orders", r, "127.0.0.1:1", "OK", time.Millisecond)
	}
	fams := scrape(t, m)
	mustSample(t, fams, 2, "vigil_upstream_rq_total", "cluster", "orders", "route", "orders", "code", "OK")
	mustSample(t, fams, 1, "vigil_upstream_rq_total", "cluster", "orders", "route", "1", "code", "OK")
	mustSample(t, fams, 1, "vigil_upstream_rq_total", "cluster", "orders", "route", "", "code", "OK")
	mustSample(t, fams, 2, "vigil_upstream_rq_duration_seconds", "cluster", "orders", "route", "orders")
	if got, _ := m.Traffic("orders"); got.RPCs != 4 {
		t.Errorf("Traffic = %+v, want 4 RPCs", got)
	}
	if n := testing.AllocsPerRun(100, func() {
		h.RPCStarted("orders", "127.0.0.1:1")
		h.RPCFinished("orders", "orders", "127.0.0.1:1", "OK", time.Millisecond)
	}); n != 0 {
		t.Errorf("a routed RPC's hooks allocate %v times", n)
	}
}
