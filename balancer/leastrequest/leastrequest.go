// Package leastrequest is the least_request load-balancing policy: the
// power of two choices over in-flight requests relative to weight.
//
// Importing the package registers the policy under the name "least_request".
//
// Each pick draws two distinct endpoints and takes the one with fewer
// connections or RPCs in flight per unit of weight (Inflight()/weight,
// compared by cross-multiplication). Comparing two random candidates instead
// of scanning for the global minimum is O(1), needs no lock, and avoids the
// herd effect of every concurrent pick choosing the same least-loaded
// endpoint before its count goes up.
//
// The first candidate is drawn by weight (an alias table, see
// balancer/internal/alias), the second uniformly among the others, and ties
// go to the first. So when nothing is in flight, or loads are exactly
// proportional to weights, traffic follows the weights; under load, the
// comparison steers it toward equal load per unit of weight, and every
// endpoint, however light, gets compared often enough to take work when it
// is idle.
//
// In-flight counts live on the shared *balancer.Endpoint (Acquire/Release
// by the data path), so they survive picker rebuilds.
package leastrequest

import (
	"math/bits"
	"math/rand/v2"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/internal/alias"
	"github.com/vigil-proxy/vigil/balancer/internal/fixed"
)

// Name is the policy's name in the configuration (lb_policy).
const Name = "least_request"

func init() { balancer.Register(Policy{}) }

// Policy is the least_request policy. The zero value is ready to use.
type Policy struct{}

// Name returns "least_request".
func (Policy) Name() string { return Name }

// Build returns a least-request picker over endpoints. A zero weight counts
// as 1. With no endpoints the picker returns nil; with one it always
// returns that one.
func (Policy) Build(endpoints []balancer.Weighted) balancer.Picker {
	if p, ok := fixed.Picker(endpoints); ok {
		return p
	}
	p := &picker{candidates: make([]candidate, len(endpoints))}
	weights := make([]uint32, len(endpoints))
	for i, e := range endpoints {
		weights[i] = e.Weight
		p.candidates[i] = candidate{endpoint: e.Endpoint, weight: int64(max(e.Weight, 1))}
	}
	if table := alias.New(weights); !table.Equal {
		p.slots = make([]slot, len(table.Slots))
		for i, s := range table.Slots {
			p.slots[i] = slot{
				threshold: alias.Threshold(s.Count, table.Capacity),
				indices:   [2]uint32{s.Alias, s.Primary},
			}
		}
	}
	return p
}

type candidate struct {
	endpoint *balancer.Endpoint
	weight   int64
}

// slot is an alias-table slot for drawing the first candidate by weight.
type slot struct {
	threshold uint64
	// indices are the alias's and the primary's, in that order.
	indices [2]uint32
}

type picker struct {
	candidates []candidate
	// slots is nil when all weights are equal: the first candidate is then
	// drawn uniformly.
	slots []slot
}

func (p *picker) Pick() *balancer.Endpoint {
	n := uint64(len(p.candidates))
	// Lemire's multiply-shift: hi is uniform in [0, n), lo the fraction
	// left over.
	first, lo := bits.Mul64(rand.Uint64(), n)
	if p.slots != nil {
		s := &p.slots[first]
		// Branch-free: the outcome is random, so a branch would mispredict.
		var which uint
		if lo < s.threshold {
			which = 1
		}
		first = uint64(s.indices[which])
	}
	// Uniform among the n-1 others.
	second, _ := bits.Mul64(rand.Uint64(), n-1)
	if second >= first {
		second++
	}
	a, b := &p.candidates[first], &p.candidates[second]
	// b wins only if strictly less loaded per unit of weight:
	// b.inflight/b.weight < a.inflight/a.weight. In-flight counts stay far
	// below 2^31 and weights below 2^32, so the products fit in an int64.
	if b.endpoint.Inflight()*a.weight < a.endpoint.Inflight()*b.weight {
		return b.endpoint
	}
	return a.endpoint
}
