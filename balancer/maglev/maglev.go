// Package maglev is the maglev load-balancing policy: consistent hashing
// with a lookup table (Eisenbud et al., "Maglev: A Fast and Reliable
// Software Network Load Balancer", NSDI 2016), which spreads keys far more
// evenly than a ring of the same cost.
//
// Importing the package registers the policy under the name "maglev".
//
// The table has TableSize (65,537, a prime, as Envoy's default) entries.
// Each member has a permutation of them, offset + j·skip mod TableSize,
// from two xxHash64 hashes of its address (seeds 0 and 1), and the members
// take turns claiming their next unclaimed entry until the table is full;
// a member of weight w takes w turns for every maxWeight rounds (weighted
// Maglev, as Envoy's), so its share of entries is its share of the weight
// to within one entry. A key's hash picks entry ⌊hash·TableSize/2^64⌋: one
// multiplication and one load, whatever the number of endpoints.
//
// Failover without moving other keys. The table is populated over every
// member, routable or not, and the entries of members that are not
// routable (evicted) are filled from a second table populated over the
// routable ones only. So a healthy endpoint's keys never move when another
// is evicted, the evicted one's keys spread over the others as Maglev
// spreads them, and readmission restores the members' table exactly. An
// endpoint excluded since the build, or tried by a retry, is skipped by
// moving on to the next entries, so that the same key still goes to the
// same place.
//
// Membership changes repopulate the table: Maglev moves a little more than
// the 1/N of the keys that must move (BenchmarkKeysMoved), since the
// members' turns shift when one leaves.
package maglev

import (
	"container/heap"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"

	"github.com/vigil-proxy/vigil/balancer"
)

// Name is the policy's name in the configuration (lb_policy).
const Name = "maglev"

// TableSize is the number of entries of the lookup table: a prime, so that
// every skip in [1, TableSize) visits every entry, and large next to any
// cluster's endpoint count (Maglev's balance is within N/TableSize).
const TableSize = 65537

func init() { balancer.Register(Policy{}) }

// Policy is the maglev policy. The zero value hashes no header. Policies
// are compared with ==: a change of Header is a policy change for the pool.
type Policy struct {
	// Header is the gRPC metadata key grpc listeners hash.
	Header string
}

// Name returns "maglev".
func (Policy) Name() string { return Name }

// HashHeader returns p.Header.
func (p Policy) HashHeader() string { return p.Header }

// Build returns a table over endpoints, all of them members.
func (p Policy) Build(endpoints []balancer.Weighted) balancer.Picker {
	return p.BuildHash(endpoints, endpoints)
}

// BuildHash returns a table over routable placed among members (see the
// package doc). A zero weight counts as 1.
func (p Policy) BuildHash(routable, members []balancer.Weighted) balancer.HashPicker {
	if len(routable) == 0 {
		return &table{}
	}
	// In address order, so that the table does not depend on the order of
	// the members (their turns do).
	byAddress := func(a, b balancer.Weighted) int {
		return strings.Compare(a.Endpoint.Address(), b.Endpoint.Address())
	}
	members = slices.SortedFunc(slices.Values(members), byAddress)
	routable = slices.SortedFunc(slices.Values(routable), byAddress)

	t := &table{endpoints: make([]*balancer.Endpoint, len(routable)), entries: make([]uint32, TableSize)}
	index := make(map[*balancer.Endpoint]uint32, len(routable))
	for i, r := range routable {
		t.endpoints[i] = r.Endpoint
		index[r.Endpoint] = uint32(i)
	}
	all := populate(members)
	var fallback []uint32 // over the routable ones, when some member is not
	if len(routable) < len(members) {
		fallback = populate(routable)
	}
	for e, m := range all {
		if i, ok := index[members[m].Endpoint]; ok {
			t.entries[e] = i
		} else {
			t.entries[e] = fallback[e]
		}
	}
	return t
}

// populate fills a table of TableSize entries with indices of ws (at
// least one), by weighted turns over their permutations: in round r
// (from 1), member i takes a turn if ⌊r·w_i/maxWeight⌋ grew, the members of
// a round in index order. The heaviest member takes a turn every round, so
// the table fills in about TableSize·maxWeight/Σw rounds.
func populate(ws []balancer.Weighted) []uint32 {
	const unfilled = ^uint32(0)
	entries := make([]uint32, TableSize)
	for i := range entries {
		entries[i] = unfilled
	}
	perms := make([]perm, len(ws))
	var maxWeight, sum uint64
	for i, w := range ws {
		addr := w.Endpoint.Address()
		offset := xxhash.Sum64String(addr) % TableSize
		d := xxhash.NewWithSeed(1)
		d.WriteString(addr)
		skip := d.Sum64()%(TableSize-1) + 1
		perms[i] = perm{next: offset, skip: skip, weight: uint64(max(w.Weight, 1))}
		maxWeight = max(maxWeight, perms[i].weight)
		sum += perms[i].weight
	}
	claim := func(i int) {
		p := &perms[i]
		for entries[p.next] != unfilled {
			p.next = (p.next + p.skip) % TableSize
		}
		entries[p.next] = uint32(i)
		p.next = (p.next + p.skip) % TableSize
	}
	// Visiting every member every round costs rounds·N: fine while the
	// weights are alike, but one heavy endpoint among many light ones
	// (10,000 of weight 1 and one of 10,000) makes that 3·10^8 visits, 2.4 s
	// measured, under the pool's lock. Then the turns come from a heap
	// ordered by (round, index), the same order, in TableSize·log N: 10 ms
	// for that cluster (BenchmarkBuild).
	if rounds := TableSize*maxWeight/sum + 1; rounds*uint64(len(perms)) <= 8*TableSize {
		populateByRounds(perms, maxWeight, claim)
	} else {
		populateByHeap(perms, maxWeight, claim)
	}
	return entries
}

// perm is a member's permutation of the table and its turns.
type perm struct{ next, skip, credit, weight uint64 }

// populateByRounds visits every member every round.
func populateByRounds(perms []perm, maxWeight uint64, claim func(int)) {
	for filled := 0; filled < TableSize; {
		for i := range perms {
			p := &perms[i]
			if p.credit += p.weight; p.credit < maxWeight {
				continue
			}
			p.credit -= maxWeight
			claim(i)
			if filled++; filled == TableSize {
				return
			}
		}
	}
}

// populateByHeap takes the same turns from a heap: member i's k-th turn is
// in round ⌈k·maxWeight/w_i⌉.
func populateByHeap(perms []perm, maxWeight uint64, claim func(int)) {
	h := make(turns, len(perms))
	for i, p := range perms {
		h[i] = turn{round: ceilDiv(maxWeight, p.weight), member: i, k: 1}
	}
	heap.Init(&h)
	for range TableSize {
		t := &h[0]
		claim(t.member)
		t.k++
		t.round = ceilDiv(t.k*maxWeight, perms[t.member].weight)
		heap.Fix(&h, 0)
	}
}

func ceilDiv(a, b uint64) uint64 { return (a + b - 1) / b }

type turn struct {
	round  uint64
	member int
	k      uint64 // the member's turns so far, plus one
}

type turns []turn

func (h turns) Len() int { return len(h) }
func (h turns) Less(i, j int) bool {
	return h[i].round < h[j].round || h[i].round == h[j].round && h[i].member < h[j].member
}
func (h turns) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *turns) Push(x any)   { *h = append(*h, x.(turn)) }
func (h *turns) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// table is the picker: each entry's index into endpoints.
type table struct {
	endpoints []*balancer.Endpoint
	entries   []uint32
}

// Pick returns the endpoint of a random hash: by weight, like a keyless
// request.
func (t *table) Pick() *balancer.Endpoint { return t.PickHash(rand.Uint64(), nil) }

// PickHash returns the endpoint of h's entry, or of the next entries' when
// it is excluded or in skip.
func (t *table) PickHash(h uint64, skip []*balancer.Endpoint) *balancer.Endpoint {
	if len(t.entries) == 0 {
		return nil
	}
	// Lemire's multiply-shift: uniform over the entries, no division.
	i, _ := bits.Mul64(h, TableSize)
	e := t.endpoints[t.entries[i]]
	if !e.Excluded() && !slices.Contains(skip, e) {
		return e
	}
	// Walk on: the entries are shuffled, so the next ones belong to the
	// other endpoints in proportion. Bounded by the table, which only a
	// moment when every endpoint is excluded walks whole.
	for k := uint64(1); k < TableSize; k++ {
		j := i + k
		if j >= TableSize {
			j -= TableSize
		}
		if e := t.endpoints[t.entries[j]]; !e.Excluded() && !slices.Contains(skip, e) {
			return e
		}
	}
	return nil
}
