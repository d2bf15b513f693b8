package integration

import (
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestFlapSettlesAndServes: a backend whose health flaps 40 times in quick
// succession under load, then settles on SERVING, takes traffic within a
// second of vigil readmitting it, six cycles in a row (the first wave could
// leave such an endpoint out of the picker for good while /clusters said
// healthy). Every transition is a record of the eviction log, and the
// evicted records add up to vigil_evictions_total.
func TestFlapSettlesAndServes(t *testing.T) {
	t.Parallel()
	c := newChaosCluster(t, strings.Replace(chaosHealthCheck, "mode: check", "mode: watch", 1), "")
	faulty := c.fronts[2].addr
	b := c.bs[2]
	c.warmUp(t)
	from := c.v.mark()
	c.load.start()
	for cycle := range 6 {
		for i := range 40 {
			if i%2 == 0 {
				b.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
			} else {
				b.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
			}
			// Paced so that most flips reach vigil: grpc-go's health
			// server sends a Watch only the latest status.
			time.Sleep(500 * time.Microsecond)
		}
		// Settled on SERVING (the 40th flip): once vigil says so, traffic
		// must follow at once.
		eventually(t, 20*time.Second, func() bool {
			_, e := endpointOf(t, clusters(t, c.admin), "demo", faulty)
			return e["health"] == "healthy"
		}, "cycle %d: %s healthy in /clusters after the flaps", cycle, faulty)
		c.load.waitServed(t, time.Second, b.id, c.load.served()[b.id])
	}
	c.load.pause()

	evicted := c.v.logs.find(from, match("endpoint evicted", "endpoint", faulty))
	readmitted := c.v.logs.find(from, match("endpoint readmitted", "endpoint", faulty))
	if len(evicted) == 0 || len(evicted) != len(readmitted) {
		t.Fatalf("%d evicted and %d readmitted records for the flapping endpoint; want as many of each, at least one", len(evicted), len(readmitted))
	}
	// In order, each transition the opposite of the one before.
	var seq []string
	for _, r := range c.v.logs.find(from, func(r record) bool {
		return r.str("endpoint") == faulty && (r.msg() == "endpoint evicted" || r.msg() == "endpoint readmitted")
	}) {
		seq = append(seq, r.msg())
	}
	for i := 1; i < len(seq); i++ {
		if seq[i] == seq[i-1] {
			t.Fatalf("transition %d repeats %q: %v", i, seq[i], seq)
		}
	}
	all := len(c.v.logs.find(0, match("endpoint evicted", "cluster", "demo")))
	series, err := chaosScrapeSeries(c.admin, "vigil_evictions_total")
	if err != nil {
		t.Fatal(err)
	}
	var counted float64
	for _, v := range series {
		counted += v
	}
	if int(counted) != all {
		t.Errorf("%d endpoint evicted records, vigil_evictions_total says %v", all, counted)
	}
	t.Logf("%d evictions and %d readmissions of the flapping endpoint, all logged; %d evictions in all, %v counted", len(evicted), len(readmitted), all, counted)
	c.othersUntouched(t, c.admitted, faulty)
}
