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
		h.RPCFinished("orders", "127.0.0.1:1", code, time.Millisecond)
	}
	h.RPCFinished("payments", "", "UNAVAILABLE", 0) // no healthy upstream: no endpoint
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
