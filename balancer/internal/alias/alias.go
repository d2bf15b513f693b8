// Package alias builds exact integer alias tables (Vose's method) over
// endpoint weights. The load-balancing policies share it: random and
// least_request sample a table with one random number per draw, and
// round_robin walks one deterministically, which gives a smooth weighted
// schedule with exact proportions in O(n) memory whatever the weight sum.
//
// A table has n slots (n = number of weights) of Capacity units each. Every
// weight w_i becomes w_i·n/g units (g keeps the numbers small), so the units
// sum to n·Capacity and fill the slots exactly. Slot i holds Count units of
// Primary (endpoint i itself) and Capacity−Count units of Alias (a heavier
// endpoint that overflowed). Drawing a uniform slot, then Primary with
// probability Count/Capacity, selects endpoint i with probability exactly
// w_i/Σw; taking every slot once per round and Primary in Count of every
// Capacity rounds selects it exactly w_i times per Σw picks, on average.
package alias

import (
	"math"
	"math/bits"
)

// MaxCapacity bounds Capacity so that a round-robin walk can compute
// round·Count+offset in 64 bits without overflow. Weight sums that would
// exceed it are scaled down (see New); the configuration's weights (at most
// 10,000 on at most ~10,000 endpoints, a sum of 10^8) never are.
const MaxCapacity = math.MaxUint32

// Slot is one cell of a table.
type Slot struct {
	// Primary and Alias index the weights passed to New. A full slot has
	// Alias == Primary.
	Primary, Alias uint32
	// Count is Primary's share of the slot, 1..Capacity units.
	Count uint32
}

// Table is an alias table.
type Table struct {
	Slots []Slot
	// Capacity is the number of units in every slot.
	Capacity uint32
	// Equal is true when all weights are equal: callers can then skip the
	// table and choose uniformly.
	Equal bool
}

// New builds the table for weights; a zero weight counts as 1. weights must
// have fewer than 2^32 entries; no weights give an empty table. If the weight sum,
// reduced by the weights' greatest common divisor, exceeds MaxCapacity (only
// possible with weights far above what the configuration allows), the
// weights are scaled down first and proportions become approximate.
func New(weights []uint32) Table {
	n := len(weights)
	if n == 0 {
		return Table{Equal: true}
	}
	w := normalize(weights)

	var sum uint64
	for _, x := range w {
		sum += uint64(x)
	}
	// Capacity·n must equal the unit total Σ w_i·(n/g): with g = gcd(n, Σw),
	// Capacity = Σw/g and each weight scales by n/g.
	g := gcd(uint64(n), sum)
	capacity := sum / g
	scale := uint64(n) / g

	t := Table{Slots: make([]Slot, n), Capacity: uint32(capacity), Equal: true}
	units := make([]uint64, n)
	// Vose: small endpoints (less than a slot's worth) keep their own slot
	// and top it up from a large one. Work lists are stacks of indices.
	small := make([]uint32, 0, n)
	large := make([]uint32, 0, n)
	for i, x := range w {
		if x != w[0] {
			t.Equal = false
		}
		units[i] = uint64(x) * scale
		if units[i] < capacity {
			small = append(small, uint32(i))
		} else {
			large = append(large, uint32(i))
		}
	}
	for len(small) > 0 && len(large) > 0 {
		s := small[len(small)-1]
		small = small[:len(small)-1]
		l := large[len(large)-1]
		t.Slots[s] = Slot{Primary: s, Alias: l, Count: uint32(units[s])}
		units[l] -= capacity - units[s]
		if units[l] < capacity {
			large = large[:len(large)-1]
			small = append(small, l)
		}
	}
	// With integer units the leftovers are exactly one slot's worth each.
	for _, i := range large {
		t.Slots[i] = Slot{Primary: i, Alias: i, Count: uint32(capacity)}
	}
	for _, i := range small { // unreachable with exact arithmetic; be safe
		t.Slots[i] = Slot{Primary: i, Alias: i, Count: uint32(capacity)}
	}
	return t
}

// normalize returns weights with zeros raised to 1, divided by their
// greatest common divisor, and scaled down if their sum exceeds MaxCapacity.
func normalize(weights []uint32) []uint32 {
	w := make([]uint32, len(weights))
	var g uint64
	for i, x := range weights {
		w[i] = max(x, 1)
		g = gcd(g, uint64(w[i]))
	}
	for {
		var sum uint64
		for i := range w {
			w[i] /= uint32(g)
			sum += uint64(w[i])
		}
		if sum <= MaxCapacity {
			return w
		}
		shift := bits.Len64(sum) - bits.Len64(MaxCapacity)
		g = 0
		for i := range w {
			w[i] = max(w[i]>>shift, 1)
			g = gcd(g, uint64(w[i]))
		}
	}
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Threshold converts a slot's share count/capacity into a 64-bit fixed-point
// probability: a uniform 64-bit number is below it with probability
// count/capacity (to within 2^-64). A full slot gives the maximum, and its
// alias is its primary, so the one value not below it does no harm.
func Threshold(count, capacity uint32) uint64 {
	if count >= capacity {
		return math.MaxUint64
	}
	q, _ := bits.Div64(uint64(count), 0, uint64(capacity))
	return q
}
