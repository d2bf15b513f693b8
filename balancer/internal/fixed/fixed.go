// Package fixed has the pickers every policy uses when there is nothing
// to choose: no endpoint (Pick returns nil) or one (Pick returns it).
package fixed

import "github.com/vigil-proxy/vigil/balancer"

// Picker returns the picker for zero or one endpoint, and false when there
// are more, for the policy to build its own.
func Picker(endpoints []balancer.Weighted) (balancer.Picker, bool) {
	switch len(endpoints) {
	case 0:
		return none{}, true
	case 1:
		return single{endpoints[0].Endpoint}, true
	}
	return nil, false
}

type none struct{}

func (none) Pick() *balancer.Endpoint { return nil }

type single struct{ e *balancer.Endpoint }

func (p single) Pick() *balancer.Endpoint { return p.e }
