package discovery

import (
	"net/netip"
	"slices"
)

// Endpoint is one discovered backend.
type Endpoint struct {
	// Address is ip:port in canonical form (netip.AddrPort.String):
	// "10.0.0.1:50051", "[2001:db8::1]:50051".
	Address string
	// Weight is at least 1: an SRV record's weight (0 counts as 1), else 1.
	Weight uint32
	// Draining marks a Kubernetes endpoint that is serving and terminating:
	// it finishes its in-flight work and takes no new traffic.
	Draining bool
}

// setBuilder collects endpoints found by one lookup, each address once.
type setBuilder struct {
	byAddr map[netip.AddrPort]Endpoint
}

func newSetBuilder(n int) *setBuilder {
	return &setBuilder{byAddr: make(map[netip.AddrPort]Endpoint, n)}
}

// add records an endpoint. An address found twice keeps the larger weight,
// and a candidate beats a draining one: during a rollout or a slice split
// one endpoint may be listed twice, and the more available listing is the
// current one.
func (b *setBuilder) add(ap netip.AddrPort, weight uint32, draining bool) {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	weight = min(max(weight, 1), MaxWeight)
	e, seen := b.byAddr[ap]
	if !seen {
		b.byAddr[ap] = Endpoint{Address: ap.String(), Weight: weight, Draining: draining}
		return
	}
	if e.Draining && !draining {
		e.Draining, e.Weight = false, weight
	} else if e.Draining == draining {
		e.Weight = max(e.Weight, weight)
	}
	b.byAddr[ap] = e
}

// set returns the endpoints sorted by address, so that two lookups that
// found the same endpoints return equal slices.
func (b *setBuilder) set() []Endpoint {
	keys := make([]netip.AddrPort, 0, len(b.byAddr))
	for ap := range b.byAddr {
		keys = append(keys, ap)
	}
	slices.SortFunc(keys, func(a, b netip.AddrPort) int { return a.Compare(b) })
	out := make([]Endpoint, len(keys))
	for i, ap := range keys {
		out[i] = b.byAddr[ap]
	}
	return out
}
