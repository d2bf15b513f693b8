package roundrobin

import (
	"math/rand/v2"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/internal/picktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRegistered(t *testing.T) {
	p, ok := balancer.PolicyByName(Name)
	if !ok {
		t.Fatalf("policy %q not registered", Name)
	}
	if p.Name() != "round_robin" {
		t.Fatalf("Name() = %q", p.Name())
	}
}

// cycleOf returns the length of p's schedule, after which it repeats.
func cycleOf(t *testing.T, p balancer.Picker) uint64 {
	t.Helper()
	switch p := p.(type) {
	case *equalPicker:
		return p.n
	case *weightedPicker:
		return p.cycle
	}
	if p.Pick() != nil { // one endpoint: fixed.Picker
		return 1
	}
	t.Fatalf("unexpected picker %T", p)
	return 0
}

func sumOf(weights []uint32) uint64 {
	var s uint64
	for _, w := range weights {
		s += uint64(max(w, 1))
	}
	return s
}

func TestExactProportionsOverACycle(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	random := func(n int, maxWeight uint32) []uint32 {
		w := make([]uint32, n)
		for i := range w {
			w[i] = 1 + r.Uint32N(maxWeight)
		}
		return w
	}
	tests := []struct {
		name    string
		weights []uint32
	}{
		{"one endpoint", []uint32{5}},
		{"equal", []uint32{1, 1, 1}},
		{"equal but not one", []uint32{7, 7}},
		{"zero counts as one", []uint32{0, 1, 1}},
		{"three to one", []uint32{3, 1}},
		{"five one one", []uint32{5, 1, 1}},
		{"two two one", []uint32{2, 2, 1}},
		{"weights 1 and 10000", []uint32{1, 10000}},
		{"one heavy among many light", append([]uint32{10000}, picktest.Equal(19)...)},
		{"common divisor", []uint32{3000, 1000, 2000}},
		{"random 20", random(20, 100)},
		{"random 300", random(300, 10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps, index := picktest.Endpoints(tt.weights...)
			p := Policy{}.Build(eps)
			cycle := cycleOf(t, p)
			sum := sumOf(tt.weights)
			// Any window of one full cycle, wherever the picker started,
			// holds exactly each endpoint's share: check two windows.
			for window := range 2 {
				counts := picktest.Count(t, p, index, int(cycle))
				for i, c := range counts {
					// c/cycle == w/sum, cross-multiplied.
					if uint64(c)*sum != uint64(max(tt.weights[i], 1))*cycle {
						t.Fatalf("window %d: endpoint %d (weight %d) picked %d times in a cycle of %d, want share %d/%d",
							window, i, tt.weights[i], c, cycle, max(tt.weights[i], 1), sum)
					}
				}
			}
		})
	}
}

// TestSmooth checks that every endpoint's picks are spread over the cycle:
// the longest gap between two picks of an endpoint is at most twice its
// average gap plus one pass over the endpoints (a precomputed schedule of
// AAAB-style bursts fails this for every light endpoint that follows a heavy
// one, and so does a schedule that bunches the light ones).
func TestSmooth(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
		// maxRun bounds consecutive picks of one endpoint, 0 for no check.
		maxRun int
	}{
		{"three to one", []uint32{3, 1}, 3},
		{"five one one", []uint32{5, 1, 1}, 4},
		{"two two one", []uint32{2, 2, 1}, 2},
		{"one two three four", []uint32{1, 2, 3, 4}, 3},
		{"ten one one one", []uint32{10, 1, 1, 1}, 0},
		{"mixed 30", picktest.Mixed(30)[:30:30], 0},
		{"one heavy among many light", append([]uint32{10000}, picktest.Equal(19)...), 0},
	}
	// Mixed weights have a huge cycle: check them as 1..20 instead.
	for i := range tests[5].weights {
		tests[5].weights[i] = 1 + tests[5].weights[i]%20
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps, index := picktest.Endpoints(tt.weights...)
			p := Policy{}.Build(eps)
			cycle := int(cycleOf(t, p))
			seq := picktest.Sequence(t, p, index, cycle)
			n := len(tt.weights)
			last := make([]int, n)
			first := make([]int, n)
			maxGap := make([]int, n)
			for i := range last {
				last[i], first[i] = -1, -1
			}
			run, longest := 0, 0
			for k, e := range seq {
				if first[e] < 0 {
					first[e] = k
				} else {
					maxGap[e] = max(maxGap[e], k-last[e])
				}
				last[e] = k
				if k > 0 && seq[k-1] == e {
					run++
				} else {
					run = 1
				}
				longest = max(longest, run)
			}
			sum := sumOf(tt.weights)
			for e := range n {
				// Wrap around: the schedule repeats.
				maxGap[e] = max(maxGap[e], first[e]+cycle-last[e])
				avg := float64(sum) / float64(max(tt.weights[e], 1))
				if bound := 2*avg + float64(n); float64(maxGap[e]) > bound {
					t.Errorf("endpoint %d (weight %d): gap of %d picks, want at most %.0f (average %.1f)",
						e, tt.weights[e], maxGap[e], bound, avg)
				}
			}
			if tt.maxRun > 0 && longest > tt.maxRun {
				t.Errorf("%d picks of one endpoint in a row, want at most %d", longest, tt.maxRun)
			}
		})
	}
}

// TestLargeMixedWeights checks 10,000 endpoints with weights 1..10000, whose
// cycle is far too long to walk: 300,000 picks from a random start still
// match the weights closely (the schedule is deterministic, so this is much
// tighter than a random draw would be).
func TestLargeMixedWeights(t *testing.T) {
	weights := picktest.Mixed(10000)
	eps, index := picktest.Endpoints(weights...)
	p := Policy{}.Build(eps)
	counts := picktest.Count(t, p, index, 300_000)
	picktest.ExpectShares(t, counts, weights, 5)
}

func TestStartsAtRandomOffset(t *testing.T) {
	for _, weights := range [][]uint32{{1, 1, 1, 1}, {3, 1, 2, 1}} {
		eps, index := picktest.Endpoints(weights...)
		seen := map[int]bool{}
		for range 64 {
			seen[index[Policy{}.Build(eps).Pick()]] = true
		}
		// All 64 pickers starting on the same endpoint would have odds of
		// about 4^-63.
		if len(seen) < 2 {
			t.Errorf("weights %v: 64 new pickers all started with endpoint %v", weights, seen)
		}
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

// TestConcurrentPicksStayExact picks from many goroutines at once: every
// counter value is used exactly once, so a whole number of cycles still
// gives exact proportions.
func TestConcurrentPicksStayExact(t *testing.T) {
	weights := []uint32{5, 1, 1, 3}
	eps, index := picktest.Endpoints(weights...)
	p := Policy{}.Build(eps)
	cycle := int(cycleOf(t, p))
	const goroutines, cyclesEach = 8, 500
	counts := make([][]int, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			counts[g] = make([]int, len(weights))
			for range cycle * cyclesEach {
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
	sum := int(sumOf(weights))
	for i, c := range total {
		if want := goroutines * cyclesEach * cycle * int(weights[i]) / sum; c != want {
			t.Errorf("endpoint %d: %d picks, want exactly %d", i, c, want)
		}
	}
}

func TestSpreadStaysInRange(t *testing.T) {
	for _, capacity := range []uint32{1, 2, 7, 10001, 1<<32 - 1} {
		for i := range uint64(1000) {
			if off := spread(i, capacity); off >= capacity {
				t.Fatalf("spread(%d, %d) = %d, out of range", i, capacity, off)
			}
		}
	}
}

func BenchmarkPick(b *testing.B)         { picktest.BenchPick(b, Policy{}) }
func BenchmarkPickParallel(b *testing.B) { picktest.BenchPickParallel(b, Policy{}) }
