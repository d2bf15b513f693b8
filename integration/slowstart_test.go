package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestSlowStartReadmittedShare measures, through the real binary, the
// share of RPCs a readmitted backend gets over its slow-start window: it
// ramps from about min_weight_percent's share to its peer's, and
// /clusters shows its effective weight climbing meanwhile.
func TestSlowStartReadmittedShare(t *testing.T) {
	t.Parallel()
	const window = 4 * time.Second
	bs := []*backend{startBackend(t, "b1"), startBackend(t, "b2")}
	v := startVigil(t, yamlConfig{
		Admin:     true,
		Listeners: []yamlListener{{Name: "api", Cluster: "demo"}},
		Clusters: []yamlCluster{{Name: "demo", Endpoints: addrs(bs), Extra: fmt.Sprintf(`slow_start:
  window: %v
  aggression: 1.0
  min_weight_percent: 10`, window)}},
	}.String())
	for _, b := range bs {
		v.wait(15*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted "+b.id)
	}
	base := "http://" + v.adminAddr()
	// The ramps of the start (both together) end first.
	eventually(t, 3*window, func() bool {
		_, e := endpointOf(t, clusters(t, base), "demo", bs[1].addr)
		return e["effective_weight"] == 1.0
	}, "the start's ramp to end")

	from := v.mark()
	bs[1].serving(false)
	_, at := v.wait(10*time.Second, from, match("endpoint evicted", "endpoint", bs[1].addr), "evicted b2")
	bs[1].serving(true)
	v.wait(10*time.Second, at, match("endpoint readmitted", "endpoint", bs[1].addr), "readmitted b2")
	readmitted := time.Now()

	// RPCs in a row from one client, counted per second since the
	// readmission, for the window and one second more.
	c := dialClient(t, v.listener("api"))
	buckets := int(window/time.Second) + 1
	got, total := make([]int, buckets), make([]int, buckets)
	var weights []string
	nextLook := readmitted
	for {
		since := time.Since(readmitted)
		i := int(since / time.Second)
		if i >= buckets {
			break
		}
		if time.Now().After(nextLook) {
			_, e := endpointOf(t, clusters(t, base), "demo", bs[1].addr)
			weights = append(weights, fmt.Sprintf("%.1fs:%v", since.Seconds(), e["effective_weight"]))
			nextLook = nextLook.Add(time.Second)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		id, err := c.call(ctx)
		cancel()
		if err != nil {
			t.Fatalf("RPC %.1fs after the readmission: %v", since.Seconds(), err)
		}
		total[i]++
		if id == "b2" {
			got[i]++
		}
	}
	shares := make([]string, buckets)
	share := func(i int) float64 { return float64(got[i]) / float64(max(total[i], 1)) }
	for i := range buckets {
		shares[i] = fmt.Sprintf("%ds-%ds: %.3f of %d", i, i+1, share(i), total[i])
	}
	t.Logf("b2's share of the RPCs after its readmission (window %v): %s", window, strings.Join(shares, ", "))
	t.Logf("b2's effective_weight in /clusters: %s", strings.Join(weights, " "))

	// Linear from 10%: b2's weight over the first second is 0.1-0.25
	// (a share of 1/11 to 1/5), over the window's last 0.75-1 (3/7 to
	// 1/2), and 1 after it (1/2). Margins for the rebuild steps
	// (window/10) and the moment the readmission was seen.
	for _, tt := range []struct {
		bucket int
		lo, hi float64
	}{
		{0, 0.04, 0.27},
		{buckets - 2, 0.35, 0.52},
		{buckets - 1, 0.45, 0.55},
	} {
		if s := share(tt.bucket); s < tt.lo || s > tt.hi {
			t.Errorf("share in second %d: %.3f, want %.2f-%.2f", tt.bucket, s, tt.lo, tt.hi)
		}
	}
	if share(0) >= share(buckets-2) {
		t.Errorf("no ramp: share %.3f in the first second, %.3f in the last of the window", share(0), share(buckets-2))
	}
	if w := weights[0]; !strings.HasPrefix(strings.SplitN(w, ":", 2)[1], "0.") {
		t.Errorf("effective_weight right after the readmission: %s, want below 1", w)
	}
}
