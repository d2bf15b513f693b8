package random

import (
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/internal/picktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRegistered(t *testing.T) {
	p, ok := balancer.PolicyByName(Name)
	if !ok || p.Name() != "random" {
		t.Fatalf("policy %q not registered (got %v, %v)", Name, p, ok)
	}
}

// TestDistribution draws many picks and compares each endpoint's count with
// its weight. The generator cannot be seeded, so the tolerance is six
// standard deviations: a correct picker fails about once in 10^7 runs, while
// a picker that ignores weights misses by hundreds of them.
func TestDistribution(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
		picks   int
	}{
		{"one endpoint", []uint32{3}, 1000},
		{"equal", []uint32{1, 1, 1}, 300_000},
		{"zero counts as one", []uint32{0, 1}, 200_000},
		{"three to one", []uint32{3, 1}, 400_000},
		{"five one one", []uint32{5, 1, 1}, 700_000},
		{"weights 1 and 10000", []uint32{1, 10000}, 1_000_000},
		{"one heavy among many light", append([]uint32{10000}, picktest.Equal(99)...), 1_000_000},
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

func TestConcurrentPicks(t *testing.T) {
	weights := []uint32{5, 1, 1, 3}
	eps, index := picktest.Endpoints(weights...)
	p := Policy{}.Build(eps)
	const goroutines, picksEach = 8, 50_000
	counts := make([][]int, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			counts[g] = make([]int, len(weights))
			for range picksEach {
				counts[g][index[p.Pick()]]++
			}
		})
	}
	wg.Wait()
	total := make([]int, len(weights))
	for _, c := range counts {
		for i := range c {
			total[i] += c[i]
		}
	}
	picktest.ExpectShares(t, total, weights, 6)
}

func BenchmarkPick(b *testing.B)         { picktest.BenchPick(b, Policy{}) }
func BenchmarkPickParallel(b *testing.B) { picktest.BenchPickParallel(b, Policy{}) }
