package maglev

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
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
	if _, ok := p.(balancer.HashPolicy); !ok || p.Name() != "maglev" {
		t.Fatalf("registered %#v: a HashPolicy named maglev expected", p)
	}
}

func addrs(n int, weights ...uint32) []balancer.Weighted {
	// 10.0.x.y: distinct for up to 65,536 endpoints.
	eps := make([]balancer.Weighted, n)
	for i := range eps {
		w := uint32(1)
		if i < len(weights) {
			w = weights[i]
		}
		eps[i] = balancer.Weighted{Endpoint: balancer.NewEndpoint(fmt.Sprintf("10.0.%d.%d:50051", (i+1)/256, (i+1)%256)), Weight: w}
	}
	return eps
}

func keys(n int) []uint64 {
	ks := make([]uint64, n)
	for i := range ks {
		ks[i] = balancer.HashString("session-" + strconv.Itoa(i))
	}
	return ks
}

func place(t testing.TB, p balancer.HashPicker, ks []uint64) []*balancer.Endpoint {
	t.Helper()
	out := make([]*balancer.Endpoint, len(ks))
	for i, k := range ks {
		if out[i] = p.PickHash(k, nil); out[i] == nil {
			t.Fatalf("key %d placed nowhere", i)
		}
	}
	return out
}

// TestEntriesFollowWeights: each endpoint holds its weight's share of the
// table to within one entry per member (equal weights) or a few (mixed).
func TestEntriesFollowWeights(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
		slack   float64 // entries
	}{
		{"2 equal", []uint32{1, 1}, 1},
		{"5 equal", []uint32{1, 1, 1, 1, 1}, 1},
		{"1:2:3:4", []uint32{1, 2, 3, 4}, 4},
		{"1:10000", []uint32{1, 10000}, 2},
		{"100 mixed", picktest.Mixed(100), 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps := addrs(len(tt.weights), tt.weights...)
			tb := Policy{}.Build(eps).(*table)
			counts := map[*balancer.Endpoint]int{}
			for _, i := range tb.entries {
				counts[tb.endpoints[i]]++
			}
			var sum float64
			for _, w := range tt.weights {
				sum += float64(w)
			}
			for i, w := range eps {
				want := TableSize * float64(w.Weight) / sum
				if d := math.Abs(float64(counts[w.Endpoint]) - want); d > tt.slack+1 && d/want > 0.01 {
					t.Errorf("endpoint %d (weight %d): %d entries, want %.1f", i, w.Weight, counts[w.Endpoint], want)
				}
			}
		})
	}
}

func TestSameKeySameEndpoint(t *testing.T) {
	eps := addrs(5)
	ks := keys(1000)
	want := place(t, Policy{}.Build(eps).(balancer.HashPicker), ks)
	shuffled := slices.Clone(eps)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	if got := place(t, Policy{}.Build(shuffled).(balancer.HashPicker), ks); !slices.Equal(got, want) {
		t.Fatal("keys placed differently by a table over the same members listed in another order")
	}
}

// TestSpread10000KeysOver5: the same figure as ring_hash's, far tighter:
// the table is even to within an entry, what is left is the keys' own
// noise (a binomial standard deviation of 2% of 2,000).
func TestSpread10000KeysOver5(t *testing.T) {
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
	if worst[199] > 0.15 {
		t.Errorf("worst deviation %.1f%%, want within 15%%", 100*worst[199])
	}
}

func TestEvictionMovesOnlyItsKeys(t *testing.T) {
	members := addrs(5)
	ks := keys(10000)
	before := place(t, Policy{}.BuildHash(members, members), ks)
	for out := range members {
		gone := members[out].Endpoint
		routable := slices.Delete(slices.Clone(members), out, out+1)
		after := place(t, Policy{}.BuildHash(routable, members), ks)
		got := map[*balancer.Endpoint]int{}
		for i := range ks {
			switch {
			case before[i] == gone:
				if after[i] == gone {
					t.Fatalf("key %d still on evicted %s", i, gone.Address())
				}
				got[after[i]]++
			case after[i] != before[i]:
				t.Fatalf("key %d moved from %s to %s when %s was evicted", i, before[i].Address(), after[i].Address(), gone.Address())
			}
		}
		if len(got) != 4 {
			t.Errorf("%s's keys went to %d endpoints, want all 4 others", gone.Address(), len(got))
		}
		gone.SetExcluded(true)
		stale := Policy{}.BuildHash(members, members)
		for i, k := range ks {
			// Excluded before the rebuild: its keys leave it at once, the
			// others' stay.
			if e := stale.PickHash(k, nil); e == gone || (before[i] != gone && e != before[i]) {
				t.Fatalf("key %d on %s with %s excluded", i, e.Address(), gone.Address())
			}
		}
		gone.SetExcluded(false)
		if back := place(t, Policy{}.BuildHash(members, members), ks); !slices.Equal(back, before) {
			t.Fatalf("readmitting %s did not put every key back", gone.Address())
		}
	}
}

func TestSkipWalksOn(t *testing.T) {
	eps := addrs(3)
	p := Policy{}.Build(eps).(balancer.HashPicker)
	for _, k := range keys(100) {
		first := p.PickHash(k, nil)
		second := p.PickHash(k, []*balancer.Endpoint{first})
		if second == nil || second == first || p.PickHash(k, []*balancer.Endpoint{first}) != second {
			t.Fatalf("retry of key %#x: %v after %v", k, second, first)
		}
		if e := p.PickHash(k, []*balancer.Endpoint{first, second, eps[0].Endpoint, eps[1].Endpoint, eps[2].Endpoint}); e != nil {
			t.Fatalf("every endpoint skipped: %v", e)
		}
	}
	none := Policy{}.BuildHash(nil, eps)
	if e := none.PickHash(1, nil); e != nil {
		t.Errorf("no routable endpoint: %v", e)
	}
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

func keysMoved(t testing.TB, n, nkeys int) float64 {
	members := addrs(n)
	ks := keys(nkeys)
	full, less := Policy{}.Build(members).(balancer.HashPicker), Policy{}.Build(members[1:]).(balancer.HashPicker)
	moved := 0
	for _, k := range ks {
		if full.PickHash(k, nil) != less.PickHash(k, nil) {
			moved++
		}
	}
	return float64(moved) / float64(nkeys)
}

func TestMembershipChangeMoves(t *testing.T) {
	moved := keysMoved(t, 10, 10000)
	t.Logf("one of 10 members leaving moves %.1f%% of the keys", 100*moved)
	if moved < 0.09 || moved > 0.20 {
		t.Errorf("%.1f%% of keys moved, want a little more than 10%%", 100*moved)
	}
}

func BenchmarkPick(b *testing.B)         { picktest.BenchPick(b, Policy{}) }
func BenchmarkPickParallel(b *testing.B) { picktest.BenchPickParallel(b, Policy{}) }

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

// BenchmarkBuild is the table's build at 1,000 endpoints, all routable
// and with one evicted (two populations).
func BenchmarkBuild(b *testing.B) {
	eps, _ := picktest.Endpoints(picktest.Mixed(1000)...)
	b.Run("1000", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Policy{}.Build(eps)
		}
	})
	skewed, _ := picktest.Endpoints(append([]uint32{10000}, picktest.Equal(10000)...)...)
	b.Run("10001/one-weight-10000", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Policy{}.Build(skewed)
		}
	})
	b.Run("1000/one-evicted", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Policy{}.BuildHash(eps[1:], eps)
		}
	})
}

func BenchmarkKeysMoved(b *testing.B) {
	var moved float64
	for b.Loop() {
		moved = keysMoved(b, 10, 100000)
	}
	b.ReportMetric(100*moved, "moved%")
}

// TestConcurrentBuildAndPick: picks through a cluster whose table is
// rebuilt under them (the race detector watches) only ever return members.
func TestConcurrentBuildAndPick(t *testing.T) {
	sets := [][]balancer.Member{}
	for n := 1; n <= 4; n++ {
		ms := make([]balancer.Member, n)
		for i := range ms {
			ms[i] = balancer.Member{Endpoint: balancer.NewEndpoint(fmt.Sprintf("10.0.1.%d:1", i)), Weight: uint32(i + 1), Healthy: i != 2}
		}
		sets = append(sets, ms)
	}
	known := map[*balancer.Endpoint]bool{}
	for _, set := range sets {
		for _, m := range set {
			known[m.Endpoint] = true
		}
	}
	c := balancer.NewCluster("c")
	c.Update(Policy{}, 0, sets[0])
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for k := uint64(0); !stop.Load(); k++ {
				if e := c.PickHash(k*0x9E3779B97F4A7C15, nil); e != nil && !known[e] {
					t.Errorf("PickHash = %v, not a member", e)
					return
				}
			}
		})
	}
	for i := range 40 {
		c.Update(Policy{}, 0, sets[i%len(sets)])
	}
	stop.Store(true)
	wg.Wait()
}

// TestPopulateHeapMatchesRounds: the heap takes the very turns the rounds
// do, so the two fills give the same table.
func TestPopulateHeapMatchesRounds(t *testing.T) {
	fill := func(ws []balancer.Weighted, byHeap bool) []uint32 {
		entries := make([]uint32, TableSize)
		for i := range entries {
			entries[i] = ^uint32(0)
		}
		perms := make([]perm, len(ws))
		var maxWeight uint64
		for i, w := range ws {
			perms[i] = perm{next: uint64(i*7919) % TableSize, skip: uint64(i%1000)*13 + 1, weight: uint64(max(w.Weight, 1))}
			maxWeight = max(maxWeight, perms[i].weight)
		}
		claim := func(i int) {
			p := &perms[i]
			for entries[p.next] != ^uint32(0) {
				p.next = (p.next + p.skip) % TableSize
			}
			entries[p.next] = uint32(i)
			p.next = (p.next + p.skip) % TableSize
		}
		if byHeap {
			populateByHeap(perms, maxWeight, claim)
		} else {
			populateByRounds(perms, maxWeight, claim)
		}
		return entries
	}
	for _, weights := range [][]uint32{{1, 1}, {1, 2, 3}, {10000, 1, 1, 1}, picktest.Mixed(50), {7, 7, 3, 1, 9999}} {
		ws := addrs(len(weights), weights...)
		if !slices.Equal(fill(ws, true), fill(ws, false)) {
			t.Errorf("weights %v: the heap's table differs from the rounds'", weights)
		}
	}
}

// TestSkewedWeightsBuildFast: one heavy endpoint among many light ones
// fills by the heap; each light one still holds its share of the table to
// within one entry (its turns are whole: 5 of its 5.46), the heavy one the
// rest.
func TestSkewedWeightsBuildFast(t *testing.T) {
	weights := append([]uint32{10000}, picktest.Equal(2000)...)
	eps := addrs(len(weights), weights...)
	tb := Policy{}.Build(eps).(*table)
	counts := map[*balancer.Endpoint]int{}
	for _, i := range tb.entries {
		counts[tb.endpoints[i]]++
	}
	share := float64(TableSize) / 12000
	for _, w := range eps[1:] {
		if c := float64(counts[w.Endpoint]); math.Abs(c-share) > 1 {
			t.Fatalf("a weight-1 endpoint holds %v entries, want %.2f ± 1", c, share)
		}
	}
	t.Logf("weight 10,000 of 12,000 holds %d entries (%.1f%%)", counts[eps[0].Endpoint], 100*float64(counts[eps[0].Endpoint])/TableSize)
}
