// Package random is the random load-balancing policy: each pick draws an
// endpoint independently, with probability proportional to its weight.
//
// Importing the package registers the policy under the name "random".
//
// Weighted draws use an alias table (Vose's method, see
// balancer/internal/alias): one 64-bit random number selects a slot with its
// high half and, with its low half, either the slot's own endpoint or its
// alias. That is O(1) per pick whatever the number of endpoints, with one
// call to math/rand/v2's top-level generator, which keeps per-thread state
// and so needs no lock. Pick never allocates.
package random

import (
	"math/bits"
	"math/rand/v2"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/internal/alias"
	"github.com/vigil-proxy/vigil/balancer/internal/fixed"
)

// Name is the policy's name in the configuration (lb_policy).
const Name = "random"

func init() { balancer.Register(Policy{}) }

// Policy is the random policy. The zero value is ready to use.
type Policy struct{}

// Name returns "random".
func (Policy) Name() string { return Name }

// Build returns a weighted random picker over endpoints. A zero weight
// counts as 1. With no endpoints the picker returns nil.
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
		p := &equalPicker{endpoints: make([]*balancer.Endpoint, len(endpoints))}
		for i, e := range endpoints {
			p.endpoints[i] = e.Endpoint
		}
		return p
	}
	p := &weightedPicker{slots: make([]slot, len(table.Slots))}
	for i, s := range table.Slots {
		p.slots[i] = slot{
			threshold: alias.Threshold(s.Count, table.Capacity),
			endpoints: [2]*balancer.Endpoint{endpoints[s.Alias].Endpoint, endpoints[s.Primary].Endpoint},
		}
	}
	return p
}

type equalPicker struct{ endpoints []*balancer.Endpoint }

func (p *equalPicker) Pick() *balancer.Endpoint {
	i, _ := bits.Mul64(rand.Uint64(), uint64(len(p.endpoints)))
	return p.endpoints[i]
}

type slot struct {
	threshold uint64
	// endpoints are the alias and the primary, in that order.
	endpoints [2]*balancer.Endpoint
}

type weightedPicker struct{ slots []slot }

func (p *weightedPicker) Pick() *balancer.Endpoint {
	// hi is uniform over the slots (Lemire's multiply-shift); lo is the
	// fraction left over, uniform over [0, 2^64) up to a bias of n/2^64.
	hi, lo := bits.Mul64(rand.Uint64(), uint64(len(p.slots)))
	s := &p.slots[hi]
	// Branch-free: the outcome is random, so a branch would mispredict.
	var which uint
	if lo < s.threshold {
		which = 1
	}
	return s.endpoints[which]
}
