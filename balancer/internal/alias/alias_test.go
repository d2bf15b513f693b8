package alias

import (
	"math"
	"math/rand/v2"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// shares returns how many units of the table belong to each weight.
func shares(t *testing.T, tab Table, n int) []uint64 {
	t.Helper()
	got := make([]uint64, n)
	for i, s := range tab.Slots {
		if s.Primary != uint32(i) {
			t.Fatalf("slot %d: primary %d, want its own endpoint", i, s.Primary)
		}
		if s.Count == 0 || s.Count > tab.Capacity {
			t.Fatalf("slot %d: count %d outside 1..%d", i, s.Count, tab.Capacity)
		}
		if int(s.Alias) >= n {
			t.Fatalf("slot %d: alias %d out of range", i, s.Alias)
		}
		got[s.Primary] += uint64(s.Count)
		got[s.Alias] += uint64(tab.Capacity - s.Count)
	}
	return got
}

func randomWeights(r *rand.Rand, n int, maxWeight uint32) []uint32 {
	w := make([]uint32, n)
	for i := range w {
		w[i] = 1 + r.Uint32N(maxWeight)
	}
	return w
}

func TestNewExactShares(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name    string
		weights []uint32
		equal   bool
	}{
		{"one", []uint32{7}, true},
		{"equal", []uint32{2, 2, 2}, true},
		{"zero counts as one", []uint32{0, 1}, true},
		{"three to one", []uint32{3, 1}, false},
		{"five one one", []uint32{5, 1, 1}, false},
		{"extremes", []uint32{1, 10000}, false},
		{"one heavy among many light", append([]uint32{10000}, make([]uint32, 999)...), false},
		{"common divisor", []uint32{4000, 2000, 6000}, false},
		{"random 1000", randomWeights(r, 1000, 10000), false},
		{"random 10000", randomWeights(r, 10000, 10000), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := New(tt.weights)
			if tab.Equal != tt.equal {
				t.Errorf("Equal = %v, want %v", tab.Equal, tt.equal)
			}
			n := len(tt.weights)
			var sum uint64
			for _, w := range tt.weights {
				sum += uint64(max(w, 1))
			}
			got := shares(t, tab, n)
			total := uint64(n) * uint64(tab.Capacity)
			for i, w := range tt.weights {
				// got[i]/total == w/sum, cross-multiplied.
				if got[i]*sum != uint64(max(w, 1))*total {
					t.Fatalf("endpoint %d (weight %d): %d of %d units, want proportion %d/%d",
						i, w, got[i], total, max(w, 1), sum)
				}
			}
		})
	}
}

func TestNewEmpty(t *testing.T) {
	if tab := New(nil); len(tab.Slots) != 0 {
		t.Fatalf("New(nil) has %d slots", len(tab.Slots))
	}
}

func TestNewScalesHugeWeights(t *testing.T) {
	weights := []uint32{math.MaxUint32, math.MaxUint32 - 1, 1, 3}
	tab := New(weights)
	if uint64(tab.Capacity) > MaxCapacity {
		t.Fatalf("capacity %d above %d", tab.Capacity, uint64(MaxCapacity))
	}
	got := shares(t, tab, len(weights))
	total := float64(len(weights)) * float64(tab.Capacity)
	// The two heavy endpoints still carry nearly everything, and the light
	// ones still get something.
	for i, want := range []float64{0.5, 0.5} {
		if share := float64(got[i]) / total; math.Abs(share-want) > 0.01 {
			t.Errorf("endpoint %d: share %.4f, want about %.2f", i, share, want)
		}
	}
	for i := 2; i < 4; i++ {
		if got[i] == 0 {
			t.Errorf("endpoint %d: no share", i)
		}
	}
}

func TestThreshold(t *testing.T) {
	tests := []struct {
		count, capacity uint32
		want            uint64
	}{
		{0, 5, 0},
		{1, 2, 1 << 63},
		{1, 4, 1 << 62},
		{1, 3, math.MaxUint64 / 3},
		{5, 5, math.MaxUint64},
		{math.MaxUint32, math.MaxUint32, math.MaxUint64},
		{math.MaxUint32 - 1, math.MaxUint32, math.MaxUint64 / math.MaxUint32 * (math.MaxUint32 - 1)},
	}
	for _, tt := range tests {
		if got := Threshold(tt.count, tt.capacity); got != tt.want {
			t.Errorf("Threshold(%d, %d) = %d, want %d", tt.count, tt.capacity, got, tt.want)
		}
	}
}
