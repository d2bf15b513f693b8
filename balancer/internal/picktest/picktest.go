// Package picktest holds the helpers the load-balancing policies' tests and
// benchmarks share: endpoint sets, pick counting and the standard
// BenchmarkPick / BenchmarkPickParallel bodies, so that every policy is
// measured the same way.
package picktest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/vigil-proxy/vigil/balancer"
)

// Endpoints returns one endpoint per weight, addressed "ep0", "ep1", ...,
// and a map from endpoint back to its index.
func Endpoints(weights ...uint32) ([]balancer.Weighted, map[*balancer.Endpoint]int) {
	eps := make([]balancer.Weighted, len(weights))
	index := make(map[*balancer.Endpoint]int, len(weights))
	for i, w := range weights {
		e := balancer.NewEndpoint(fmt.Sprintf("ep%d", i))
		eps[i] = balancer.Weighted{Endpoint: e, Weight: w}
		index[e] = i
	}
	return eps, index
}

// Equal returns n weights of 1.
func Equal(n int) []uint32 {
	w := make([]uint32, n)
	for i := range w {
		w[i] = 1
	}
	return w
}

// Mixed returns n weights drawn from 1..10000 with a fixed seed.
func Mixed(n int) []uint32 {
	r := rand.New(rand.NewPCG(uint64(n), 42))
	w := make([]uint32, n)
	for i := range w {
		w[i] = 1 + r.Uint32N(10000)
	}
	return w
}

// Sequence picks picks times and returns the index of each endpoint picked.
// It fails the test on a nil or unknown endpoint.
func Sequence(t testing.TB, p balancer.Picker, index map[*balancer.Endpoint]int, picks int) []int {
	t.Helper()
	seq := make([]int, picks)
	for k := range seq {
		e := p.Pick()
		i, ok := index[e]
		if !ok {
			t.Fatalf("pick %d returned %v, not one of the endpoints", k, e)
		}
		seq[k] = i
	}
	return seq
}

// Count picks picks times and returns how often each endpoint was picked.
func Count(t testing.TB, p balancer.Picker, index map[*balancer.Endpoint]int, picks int) []int {
	t.Helper()
	counts := make([]int, len(index))
	for range picks {
		e := p.Pick()
		i, ok := index[e]
		if !ok {
			t.Fatalf("Pick returned %v, not one of the endpoints", e)
		}
		counts[i]++
	}
	return counts
}

// ExpectShares checks that counts, out of their total, match weights within
// tolerance standard deviations of a binomial draw (plus one pick, for
// rounding), and reports the worst deviation on failure.
func ExpectShares(t testing.TB, counts []int, weights []uint32, tolerance float64) {
	t.Helper()
	var total int
	for _, c := range counts {
		total += c
	}
	var sum float64
	for _, w := range weights {
		sum += float64(max(w, 1))
	}
	for i, c := range counts {
		p := float64(max(weights[i], 1)) / sum
		want := p * float64(total)
		sigma := math.Sqrt(float64(total) * p * (1 - p))
		if d := float64(c) - want; d > tolerance*sigma+1 || -d > tolerance*sigma+1 {
			t.Errorf("endpoint %d (weight %d): %d of %d picks, want %.1f ± %.1f",
				i, weights[i], c, total, want, tolerance*sigma+1)
		}
	}
}

// ExpectNoAllocs fails if Pick allocates.
func ExpectNoAllocs(t *testing.T, p balancer.Picker) {
	t.Helper()
	if allocs := testing.AllocsPerRun(1000, func() { p.Pick() }); allocs != 0 {
		t.Errorf("Pick allocates %v times per call, want 0", allocs)
	}
}

// benchSets are the endpoint sets every policy is benchmarked over.
var benchSets = []struct {
	name    string
	weights func(int) []uint32
}{
	{"equal", Equal},
	{"mixed", Mixed},
}

// BenchPick is the body of a policy's BenchmarkPick: Pick called serially,
// over 3 and 1,000 endpoints with equal and mixed weights.
func BenchPick(b *testing.B, policy balancer.Policy) {
	for _, n := range []int{3, 1000} {
		for _, set := range benchSets {
			b.Run(fmt.Sprintf("%d/%s", n, set.name), func(b *testing.B) {
				eps, _ := Endpoints(set.weights(n)...)
				p := policy.Build(eps)
				b.ReportAllocs()
				var sink *balancer.Endpoint
				for b.Loop() {
					sink = p.Pick()
				}
				if sink == nil {
					b.Fatal("Pick returned nil")
				}
			})
		}
	}
}

// BenchPickParallel is the body of a policy's BenchmarkPickParallel: Pick
// called from GOMAXPROCS goroutines at once.
func BenchPickParallel(b *testing.B, policy balancer.Policy) {
	for _, n := range []int{3, 1000} {
		for _, set := range benchSets {
			b.Run(fmt.Sprintf("%d/%s", n, set.name), func(b *testing.B) {
				eps, _ := Endpoints(set.weights(n)...)
				p := policy.Build(eps)
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if p.Pick() == nil {
							b.Error("Pick returned nil")
							return
						}
					}
				})
			})
		}
	}
}
