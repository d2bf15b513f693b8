// Package roundrobin is the round_robin load-balancing policy: a smooth
// weighted round robin with exact proportions.
//
// Importing the package registers the policy under the name "round_robin".
//
// Every pick advances one shared atomic counter; the counter's value alone
// decides the endpoint, so Pick neither locks nor allocates. With equal
// weights the counter indexes the endpoints in turn. With unequal weights it
// walks an alias table (see balancer/internal/alias) deterministically: the
// counter visits the n slots in turn, and slot i yields its own endpoint in
// Count of every Capacity rounds, spread evenly over the rounds like a
// Bresenham line, and its alias in the others. Over a full cycle each endpoint
// gets exactly its weight's share; within the cycle, an endpoint lighter
// than average is picked at even intervals (its average gap, rounded to a
// multiple of n), and heavier ones fill the rounds in between. Weights 3:1
// give A A A B repeated, 5:1:1 give A B A A A C A A A A B ..., not bursts
// such as A A A A A B C.
//
// Why not the alternatives: a precomputed schedule (nginx's smooth weighted
// round robin unrolled into a table) costs memory proportional to the weight
// sum, up to 10^8 entries for 10,000 endpoints of weight up to 10,000, so it
// needs a cap and then loses exactness; grpc-go's static stride scheduler
// needs O(n) memory too but retries until a weighted draw succeeds, which
// takes about n·max/Σw attempts (hundreds when one endpoint outweighs many
// light ones) and rounds weights to 16 bits. The walk here is O(n) memory,
// O(n) to build and O(1) per pick, with three integer divisions.
//
// Each picker starts at a random point of its cycle, so that frequent
// rebuilds (every health change rebuilds the picker) do not all send the
// next request to the first endpoint.
package roundrobin

import (
	"math/rand/v2"
	"sync/atomic"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/internal/alias"
	"github.com/vigil-proxy/vigil/balancer/internal/fixed"
)

// Name is the policy's name in the configuration (lb_policy).
const Name = "round_robin"

func init() { balancer.Register(Policy{}) }

// Policy is the round_robin policy. The zero value is ready to use.
type Policy struct{}

// Name returns "round_robin".
func (Policy) Name() string { return Name }

// Build returns a round-robin picker over endpoints. A zero weight counts
// as 1. With no endpoints the picker returns nil.
func (Policy) Build(endpoints []balancer.Weighted) balancer.Picker {
	if p, ok := fixed.Picker(endpoints); ok {
		return p
	}
	weights := make([]uint32, len(endpoints))
	for i, e := range endpoints {
		weights[i] = e.Weight
	}
	table := alias.New(weights)
	if table.Equal {
		p := &equalPicker{
			endpoints: make([]*balancer.Endpoint, len(endpoints)),
			n:         uint64(len(endpoints)),
		}
		for i, e := range endpoints {
			p.endpoints[i] = e.Endpoint
		}
		p.next.v.Store(rand.Uint64N(p.n))
		return p
	}

	p := &weightedPicker{
		slots:    make([]slot, len(table.Slots)),
		capacity: uint64(table.Capacity),
	}
	p.cycle = uint64(len(p.slots)) * p.capacity
	for i, s := range table.Slots {
		p.slots[i] = slot{
			endpoints: [2]*balancer.Endpoint{endpoints[s.Alias].Endpoint, endpoints[s.Primary].Endpoint},
			count:     s.Count,
			offset:    spread(uint64(i), table.Capacity),
		}
	}
	p.next.v.Store(rand.Uint64N(p.cycle))
	return p
}

// spread returns the fractional part of i·φ scaled to [0, capacity): slots
// that would otherwise yield their aliases in the same rounds start their
// Bresenham lines at well-separated phases, so the aliases interleave.
func spread(i uint64, capacity uint32) uint32 {
	const phi = 0x9E3779B97F4A7C15 // 2^64/φ
	frac := i * phi                // fractional part of i/φ, as a 64-bit fixed point
	return uint32((frac >> 32) * uint64(capacity) >> 32)
}

// counter is an atomic counter alone on its cache line: every pick writes
// it, and it must not invalidate the line holding the picker's read-only
// fields on the other cores.
type counter struct {
	_ [64]byte
	v atomic.Uint64
	_ [56]byte
}

// equalPicker takes the endpoints in turn.
type equalPicker struct {
	endpoints []*balancer.Endpoint
	n         uint64
	next      counter
}

func (p *equalPicker) Pick() *balancer.Endpoint {
	return p.endpoints[p.next.v.Add(1)%p.n]
}

// slot is an alias-table slot with the endpoints resolved.
type slot struct {
	// endpoints are the alias and the primary, in that order.
	endpoints [2]*balancer.Endpoint
	// count is primary's share out of capacity; offset is the phase of the
	// slot's Bresenham line.
	count, offset uint32
}

// weightedPicker walks an alias table: pick k of the cycle takes slot k mod n
// in round k div n; the slot yields its primary in exactly count of every
// capacity rounds.
type weightedPicker struct {
	slots    []slot
	capacity uint64
	// cycle is len(slots)·capacity, below 2^64 since capacity < 2^32 and
	// len(slots) ≤ Σw < 2^32.
	cycle uint64
	next  counter
}

func (p *weightedPicker) Pick() *balancer.Endpoint {
	n := uint64(len(p.slots))
	k := p.next.v.Add(1) % p.cycle
	round, i := k/n, k%n
	s := &p.slots[i]
	// Is it the primary's turn? round < capacity and count ≤ capacity <
	// 2^32: no overflow. Branch-free, since with mixed weights the outcome
	// is unpredictable and a mispredicted branch costs more than the rest.
	var which uint
	if (round*uint64(s.count)+uint64(s.offset))%p.capacity >= p.capacity-uint64(s.count) {
		which = 1
	}
	return s.endpoints[which]
}
