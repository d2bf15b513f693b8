package leastrequest

import (
	"math"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/internal/picktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRegistered(t *testing.T) {
	p, ok := balancer.PolicyByName(Name)
	if !ok || p.Name() != "least_request" {
		t.Fatalf("policy %q not registered (got %v, %v)", Name, p, ok)
	}
}

// load puts inflight[i] requests in flight on endpoint i and takes them off
// again when the test ends.
func load(t *testing.T, eps []balancer.Weighted, inflight ...int) {
	t.Helper()
	for i, n := range inflight {
		for range n {
			eps[i].Endpoint.Acquire()
		}
	}
	t.Cleanup(func() {
		for i, n := range inflight {
			for range n {
				eps[i].Endpoint.Release()
			}
		}
	})
}

// TestIdleFollowsWeights: with nothing in flight every comparison ties and
// the weighted first candidate wins, so picks follow the weights. Six
// standard deviations: see random's TestDistribution.
func TestIdleFollowsWeights(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
		picks   int
	}{
		{"one endpoint", []uint32{3}, 1000},
		{"equal", []uint32{1, 1, 1}, 300_000},
		{"zero counts as one", []uint32{0, 1}, 200_000},
		{"three to one", []uint32{3, 1}, 400_000},
		{"weights 1 and 10000", []uint32{1, 10000}, 1_000_000},
		{"mixed 1000", picktest.Mixed(1000), 1_000_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps, index := picktest.Endpoints(tt.weights...)
			counts := picktest.Count(t, Policy{}.Build(eps), index, tt.picks)
			picktest.ExpectShares(t, counts, tt.weights, 6)
		})
	}
}

func TestPrefersLessLoadedPerWeight(t *testing.T) {
	tests := []struct {
		name     string
		weights  []uint32
		inflight []int
		// never lists endpoints that must never be picked.
		never []int
	}{
		{"loaded endpoint avoided", []uint32{1, 1, 1}, []int{10, 0, 0}, []int{0}},
		{"two endpoints: always the lighter", []uint32{1, 1}, []int{1, 0}, []int{0}},
		{"only the idle one", []uint32{1, 1, 1, 1}, []int{2, 0, 1, 3}, []int{3}},
		// 6/10 per unit of weight beats 1/1.
		{"relative to weight", []uint32{10, 1}, []int{6, 1}, []int{1}},
		// 20/10 loses to 1/1.
		{"heavy but overloaded", []uint32{10, 1}, []int{20, 1}, []int{0}},
		{"weight 10000 loaded less per unit", []uint32{10000, 1}, []int{9999, 1}, []int{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps, index := picktest.Endpoints(tt.weights...)
			load(t, eps, tt.inflight...)
			counts := picktest.Count(t, Policy{}.Build(eps), index, 10_000)
			for _, i := range tt.never {
				if counts[i] != 0 {
					t.Errorf("endpoint %d (weight %d, %d in flight) picked %d times of 10000, want never; counts %v",
						i, tt.weights[i], tt.inflight[i], counts[i], counts)
				}
			}
		})
	}
}

func TestEqualLoadSpreadsEvenly(t *testing.T) {
	weights := []uint32{1, 1, 1, 1}
	eps, index := picktest.Endpoints(weights...)
	load(t, eps, 3, 3, 3, 3)
	counts := picktest.Count(t, Policy{}.Build(eps), index, 400_000)
	picktest.ExpectShares(t, counts, weights, 6)
}

// TestBalancesInflight runs a steady load: each pick acquires its endpoint
// and the oldest of 1000 outstanding requests is released. Power of two
// choices keeps the in-flight counts per unit of weight within about 5
// requests of each other on average (measured: 4.5 for 10 equal endpoints);
// random picks spread them by about 30.
func TestBalancesInflight(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
	}{
		{"equal", picktest.Equal(10)},
		{"three to one", []uint32{3, 1, 3, 1, 3, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps, _ := picktest.Endpoints(tt.weights...)
			p := Policy{}.Build(eps)
			const outstanding, steps = 1000, 50_000
			queue := make([]*balancer.Endpoint, 0, outstanding+1)
			t.Cleanup(func() {
				for _, e := range queue {
					e.Release()
				}
			})
			var spread float64
			for range steps {
				e := p.Pick()
				e.Acquire()
				queue = append(queue, e)
				if len(queue) > outstanding {
					queue[0].Release()
					queue = queue[1:]
				} else {
					continue // still filling up
				}
				lo, hi := math.Inf(1), math.Inf(-1)
				for _, w := range eps {
					perWeight := float64(w.Endpoint.Inflight()) / float64(w.Weight)
					lo, hi = min(lo, perWeight), max(hi, perWeight)
				}
				spread += hi - lo
			}
			if mean := spread / (steps - outstanding); mean > 8 {
				t.Errorf("in-flight requests per unit of weight spread by %.1f on average, want at most 8", mean)
			} else {
				t.Logf("in-flight requests per unit of weight spread by %.1f on average", mean)
			}
		})
	}
}

func TestOneEndpointEvenWhenLoaded(t *testing.T) {
	eps, _ := picktest.Endpoints(1)
	load(t, eps, 100)
	if e := (Policy{}).Build(eps).Pick(); e != eps[0].Endpoint {
		t.Fatalf("Pick() = %v, want the only endpoint", e)
	}
}

func TestNoEndpoints(t *testing.T) {
	if e := (Policy{}).Build(nil).Pick(); e != nil {
		t.Fatalf("Pick() = %v with no endpoints, want nil", e)
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	for _, weights := range [][]uint32{{1}, {1, 1, 1}, {3, 1, 2}, picktest.Mixed(1000)} {
		eps, _ := picktest.Endpoints(weights...)
		picktest.ExpectNoAllocs(t, Policy{}.Build(eps))
	}
}

// TestConcurrentPicksAndLoad picks, acquires and releases from many
// goroutines at once (for -race) and checks the counts return to zero.
func TestConcurrentPicksAndLoad(t *testing.T) {
	eps, index := picktest.Endpoints(5, 1, 1, 3)
	p := Policy{}.Build(eps)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20_000 {
				e := p.Pick()
				if _, ok := index[e]; !ok {
					t.Errorf("Pick returned %v, not one of the endpoints", e)
					return
				}
				e.Acquire()
				e.Release()
			}
		})
	}
	wg.Wait()
	for i, w := range eps {
		if n := w.Endpoint.Inflight(); n != 0 {
			t.Errorf("endpoint %d: %d in flight after all released", i, n)
		}
	}
}

func BenchmarkPick(b *testing.B)         { picktest.BenchPick(b, Policy{}) }
func BenchmarkPickParallel(b *testing.B) { picktest.BenchPickParallel(b, Policy{}) }
