package ringhash

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
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
	hp, ok := p.(balancer.HashPolicy)
	if !ok || p.Name() != "ring_hash" || hp.HashHeader() != "" {
		t.Fatalf("registered %#v: a HashPolicy named ring_hash without a header expected", p)
	}
}

// addrs returns n endpoints at fixed addresses, so that the rings the
// tests look at, and so their figures, are the same on every run.
func addrs(n int, weights ...uint32) []balancer.Weighted {
	eps := make([]balancer.Weighted, n)
	for i := range eps {
		w := uint32(1)
		if i < len(weights) {
			w = weights[i]
		}
		eps[i] = balancer.Weighted{Endpoint: balancer.NewEndpoint(fmt.Sprintf("10.0.0.%d:50051", i+1)), Weight: w}
	}
	return eps
}

// keys returns n key hashes, as the grpc proxy computes them.
func keys(n int) []uint64 {
	ks := make([]uint64, n)
	for i := range ks {
		ks[i] = balancer.HashString("session-" + strconv.Itoa(i))
	}
	return ks
}

// place returns each key's endpoint.
func place(t *testing.T, p balancer.HashPicker, ks []uint64) []*balancer.Endpoint {
	t.Helper()
	out := make([]*balancer.Endpoint, len(ks))
	for i, k := range ks {
		if out[i] = p.PickHash(k, nil); out[i] == nil {
			t.Fatalf("key %d placed nowhere", i)
		}
	}
	return out
}

func TestRingSize(t *testing.T) {
	tests := []struct {
		name     string
		size     int
		weights  []uint32
		n        int
		wantSize int
	}{
		{"default", 0, nil, 4, DefaultRingSize},
		{"configured", 1000, nil, 10, 1000},
		{"at least one point per member", 4, nil, 10, 10},
		{"capped", MaxRingSize + 1, nil, 2, MaxRingSize},
		{"weights: 1/7 and 6/7 of 700", 700, []uint32{1, 6}, 2, 700},
		// round(16·1/10001) is 0: the light one still gets a point.
		{"a light endpoint keeps one point", 16, []uint32{1, 10000}, 2, 17},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Policy{RingSize: tt.size}.Build(addrs(tt.n, tt.weights...)).(*ring)
			if r.Size() != tt.wantSize {
				t.Errorf("ring of %d points, want %d", r.Size(), tt.wantSize)
			}
			if !slices.IsSorted(r.hashes) {
				t.Error("ring hashes not sorted")
			}
		})
	}
}

func TestFixedPickers(t *testing.T) {
	eps := addrs(1)
	p := Policy{}.BuildHash(eps, addrs(3))
	for h := range uint64(10) {
		if e := p.PickHash(h<<60, nil); e != eps[0].Endpoint {
			t.Fatalf("one routable endpoint: PickHash = %v", e)
		}
	}
	if e := p.PickHash(1, []*balancer.Endpoint{eps[0].Endpoint}); e != nil {
		t.Errorf("one routable endpoint, skipped: %v, want nil", e)
	}
	eps[0].Endpoint.SetExcluded(true)
	if e := p.Pick(); e != nil {
		t.Errorf("one routable endpoint, excluded: %v, want nil", e)
	}
	if e := (Policy{}).BuildHash(nil, addrs(2)).PickHash(1, nil); e != nil {
		t.Errorf("no routable endpoint: %v", e)
	}
}

// TestSameKeySameEndpoint: a key's endpoint depends on the members only,
// not on the order they are listed in nor on the process.
func TestSameKeySameEndpoint(t *testing.T) {
	eps := addrs(5)
	ks := keys(1000)
	pol := Policy{RingSize: 1024}
	want := place(t, pol.Build(eps).(balancer.HashPicker), ks)
	shuffled := slices.Clone(eps)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	again := pol.Build(shuffled).(balancer.HashPicker)
	for range 3 {
		if got := place(t, again, ks); !slices.Equal(got, want) {
			t.Fatal("keys placed differently by a ring over the same members listed in another order")
		}
	}
	// Pinned: the ring is the same in every process, on every machine.
	if got := want[0].Address(); got != "10.0.0.4:50051" {
		t.Errorf("session-0 on %s, want 10.0.0.4:50051 (the ring's points moved)", got)
	}
}

// TestSpread10000KeysOver5 is the figure: 10,000 keys over 5
// endpoints within 15% of even, at the default ring size. The addresses are
// fixed, so the figure is too; TestSpreadOverRandomAddresses says how
// typical it is.
func TestSpread10000KeysOver5(t *testing.T) {
	eps := addrs(5)
	counts := map[*balancer.Endpoint]int{}
	for _, e := range place(t, Policy{}.Build(eps).(balancer.HashPicker), keys(10000)) {
		counts[e]++
	}
	for _, w := range eps {
		if c := counts[w.Endpoint]; math.Abs(float64(c)-2000)/2000 > 0.15 {
			t.Errorf("%s has %d of 10,000 keys, want 2,000 ± 15%%", w.Endpoint.Address(), c)
		}
	}
	t.Logf("keys per endpoint: %v", countsOf(eps, counts))
}

func countsOf(eps []balancer.Weighted, counts map[*balancer.Endpoint]int) []int {
	out := make([]int, len(eps))
	for i, w := range eps {
		out[i] = counts[w.Endpoint]
	}
	return out
}

// TestSpreadOverRandomAddresses measures the worst endpoint's deviation
// from an even share of 10,000 keys over 5 endpoints at random loopback
// addresses (what the integration tests get), over 200 rings.
func TestSpreadOverRandomAddresses(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ks := keys(10000)
	var worst []float64
	for range 200 {
		eps := make([]balancer.Weighted, 5)
		for i := range eps {
			eps[i] = balancer.Weighted{Endpoint: balancer.NewEndpoint(fmt.Sprintf("127.0.0.1:%d", 1024+r.IntN(60000))), Weight: 1}
		}
		counts := map[*balancer.Endpoint]int{}
		for _, e := range place(t, Policy{}.Build(eps).(balancer.HashPicker), ks) {
			counts[e]++
		}
		w := 0.0
		for _, c := range counts {
			w = max(w, math.Abs(float64(c)-2000)/2000)
		}
		worst = append(worst, w)
	}
	slices.Sort(worst)
	t.Logf("worst endpoint's deviation from even: median %.1f%%, 99th percentile %.1f%%, max %.1f%%",
		100*worst[100], 100*worst[197], 100*worst[199])
	if worst[197] > 0.15 {
		t.Errorf("99th percentile of the worst deviation %.1f%%, want within 15%%", 100*worst[197])
	}
}

// TestWeightsHonoured: a key lands on an endpoint in proportion to its
// weight (random keys, as Pick draws them).
func TestWeightsHonoured(t *testing.T) {
	weights := []uint32{1, 2, 3, 4}
	eps, index := picktest.Endpoints(weights...)
	p := Policy{RingSize: 65536}.Build(eps)
	counts := picktest.Count(t, p, index, 100000)
	// The ring's arcs are random: their shares deviate from the weights by
	// about 1/sqrt(points) on top of the draw's own noise.
	picktest.ExpectShares(t, counts, weights, 8)
}

// TestEvictionMovesOnlyItsKeys: an endpoint that stops being routable (the
// others stay members) gives its keys to the others and no other key
// moves; when it is routable again its keys come back, all of them.
func TestEvictionMovesOnlyItsKeys(t *testing.T) {
	members := addrs(5)
	ks := keys(10000)
	pol := Policy{RingSize: 1024}
	before := place(t, pol.BuildHash(members, members), ks)
	for out := range members {
		gone := members[out].Endpoint
		routable := slices.Delete(slices.Clone(members), out, out+1)
		after := place(t, pol.BuildHash(routable, members), ks)
		moved := 0
		for i := range ks {
			switch {
			case before[i] == gone:
				if after[i] == gone {
					t.Fatalf("key %d still on evicted %s", i, gone.Address())
				}
				moved++
			case after[i] != before[i]:
				t.Fatalf("key %d moved from %s to %s when %s was evicted", i, before[i].Address(), after[i].Address(), gone.Address())
			}
		}
		if moved == 0 {
			t.Fatalf("%s had no key", gone.Address())
		}
		// The excluded flag (evicted a moment ago, ring not rebuilt yet)
		// sends the same keys to the same places.
		gone.SetExcluded(true)
		if stale := place(t, pol.BuildHash(members, members), ks); !slices.Equal(stale, after) {
			t.Errorf("excluding %s places keys differently from a ring without it", gone.Address())
		}
		gone.SetExcluded(false)
		if back := place(t, pol.BuildHash(members, members), ks); !slices.Equal(back, before) {
			t.Fatalf("readmitting %s did not put every key back", gone.Address())
		}
	}
}

// TestSkipWalksOn: a retry's skip list sends the key to the next endpoint
// on the ring, the same for the same key.
func TestSkipWalksOn(t *testing.T) {
	eps := addrs(3)
	p := Policy{}.Build(eps).(balancer.HashPicker)
	for _, k := range keys(100) {
		first := p.PickHash(k, nil)
		second := p.PickHash(k, []*balancer.Endpoint{first})
		if second == nil || second == first || p.PickHash(k, []*balancer.Endpoint{first}) != second {
			t.Fatalf("retry of key %#x: %v after %v", k, second, first)
		}
		third := p.PickHash(k, []*balancer.Endpoint{first, second})
		if third == nil || third == first || third == second {
			t.Fatalf("second retry of key %#x: %v", k, third)
		}
		if e := p.PickHash(k, []*balancer.Endpoint{first, second, third}); e != nil {
			t.Fatalf("every endpoint skipped: %v", e)
		}
	}
}

// TestWrapsAround: a hash past the last point belongs to the first.
func TestWrapsAround(t *testing.T) {
	r := Policy{RingSize: 10}.Build(addrs(2)).(*ring)
	last := r.hashes[len(r.hashes)-1]
	if last == math.MaxUint64 {
		t.Skip("a point at 2^64-1")
	}
	if e := r.PickHash(last+1, nil); e != r.owners[0] {
		t.Errorf("hash past the last point on %v, want the first point's %v", e, r.owners[0])
	}
	if e := r.PickHash(r.hashes[3], nil); e != r.owners[3] {
		t.Errorf("hash on point 3 goes to %v, want its owner %v", e, r.owners[3])
	}
	if e := r.PickHash(r.hashes[3]+1, nil); e != r.owners[4] {
		t.Errorf("hash just past point 3 goes to %v, want point 4's %v", e, r.owners[4])
	}
}

// TestMembershipChangeMovesAbout2OverN: when one of 10 members leaves, its
// tenth of the keys moves, and the survivors' extra points (the ring keeps
// its size) move about as many again (see the package doc).
func TestMembershipChangeMovesAbout2OverN(t *testing.T) {
	moved := keysMoved(t, 10, DefaultRingSize, 10000)
	t.Logf("one of 10 members leaving moves %.1f%% of the keys", 100*moved)
	if moved < 0.08 || moved > 0.30 {
		t.Errorf("%.1f%% of keys moved, want about 10-20%%", 100*moved)
	}
}

func keysMoved(t testing.TB, n, size, nkeys int) float64 {
	members := addrs(n)
	ks := make([]uint64, nkeys)
	for i := range ks {
		ks[i] = balancer.HashString("session-" + strconv.Itoa(i))
	}
	pol := Policy{RingSize: size}
	full, less := pol.Build(members).(balancer.HashPicker), pol.Build(members[1:]).(balancer.HashPicker)
	moved := 0
	for _, k := range ks {
		if full.PickHash(k, nil) != less.PickHash(k, nil) {
			moved++
		}
	}
	return float64(moved) / float64(nkeys)
}

func TestPickDoesNotAllocate(t *testing.T) {
	eps, _ := picktest.Endpoints(picktest.Mixed(100)...)
	p := Policy{}.Build(eps).(balancer.HashPicker)
	picktest.ExpectNoAllocs(t, p)
	skip := []*balancer.Endpoint{eps[0].Endpoint}
	if n := testing.AllocsPerRun(1000, func() { p.PickHash(12345, skip) }); n != 0 {
		t.Errorf("PickHash allocates %v times", n)
	}
}

func BenchmarkPick(b *testing.B)         { picktest.BenchPick(b, Policy{}) }
func BenchmarkPickParallel(b *testing.B) { picktest.BenchPickParallel(b, Policy{}) }

// BenchmarkPickHash is a keyed pick, the hash of the key included (a
// 36-byte session id), over 3 and 1,000 endpoints.
func BenchmarkPickHash(b *testing.B) {
	for _, n := range []int{3, 1000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			eps, _ := picktest.Endpoints(picktest.Equal(n)...)
			p := Policy{}.Build(eps).(balancer.HashPicker)
			key := "3f2b8c1e-6a4d-4e8f-9b7a-1c2d3e4f5a6b"
			b.ReportAllocs()
			var sink *balancer.Endpoint
			for b.Loop() {
				sink = p.PickHash(balancer.HashString(key), nil)
			}
			if sink == nil {
				b.Fatal("nil")
			}
		})
	}
}

// BenchmarkBuild is the ring's build, which every membership or health
// change pays (off the pick path), at 1,000 endpoints.
func BenchmarkBuild(b *testing.B) {
	for _, size := range []int{1024, DefaultRingSize, 65536, MaxRingSize} {
		b.Run(fmt.Sprintf("1000/ring=%d", size), func(b *testing.B) {
			eps, _ := picktest.Endpoints(picktest.Mixed(1000)...)
			pol := Policy{RingSize: size}
			b.ReportAllocs()
			for b.Loop() {
				pol.Build(eps)
			}
		})
	}
}

// BenchmarkKeysMoved reports the share of 100,000 keys that move when one
// of 10 endpoints leaves, as the metric moved%.
func BenchmarkKeysMoved(b *testing.B) {
	for _, size := range []int{1024, DefaultRingSize, 65536} {
		b.Run(fmt.Sprintf("1of10/ring=%d", size), func(b *testing.B) {
			var moved float64
			for b.Loop() {
				moved = keysMoved(b, 10, size, 100000)
			}
			b.ReportMetric(100*moved, "moved%")
		})
	}
}

// TestSortEntries: the radix sort orders by hash, then address, whatever
// the order it is given, ties included.
func TestSortEntries(t *testing.T) {
	eps := addrs(3)
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{0, 1, 10, 255, 256, 1000, 5000} {
		es := make([]entry, n)
		for i := range es {
			h := r.Uint64()
			if i%7 == 3 {
				h = es[i-1].hash // ties
			}
			if i%11 == 5 {
				h &= 0xffff // high bytes all zero
			}
			es[i] = entry{h, eps[r.IntN(3)].Endpoint}
		}
		want := slices.Clone(es)
		slices.SortFunc(want, compareEntries)
		sortEntries(es)
		if !slices.Equal(es, want) {
			t.Fatalf("%d entries: radix order differs from the comparison sort's", n)
		}
	}
}

// TestIndexedSearch: the bucket index finds the same point as a search of
// the whole ring, at every size, on random hashes and on the points
// themselves and their neighbours.
func TestIndexedSearch(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, size := range []int{2, 3, 5, 17, 100, 1024, 5000} {
		rg := Policy{RingSize: size}.Build(addrs(2)).(*ring)
		want := func(h uint64) *balancer.Endpoint {
			i, _ := slices.BinarySearch(rg.hashes, h)
			return rg.owners[i%len(rg.owners)]
		}
		probes := []uint64{0, math.MaxUint64}
		for _, p := range rg.hashes {
			probes = append(probes, p-1, p, p+1)
		}
		for range 1000 {
			probes = append(probes, r.Uint64())
		}
		for _, h := range probes {
			if got := rg.PickHash(h, nil); got != want(h) {
				t.Fatalf("ring of %d, hash %#x: %v, want %v", size, h, got.Address(), want(h).Address())
			}
		}
	}
}
