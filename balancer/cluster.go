package balancer

import (
	"math/rand/v2"
	"sync/atomic"
)

// Member is an endpoint of a cluster with what the balancer needs to know
// about its health. Draining endpoints are not members.
type Member struct {
	Endpoint *Endpoint
	Weight   uint32
	// Healthy endpoints take traffic.
	Healthy bool
	// PanicEligible endpoints are unhealthy only for transport reasons and
	// take traffic while the cluster is in panic.
	PanicEligible bool
	// Pending endpoints have not been judged yet: they take no traffic and
	// do not count toward the panic threshold, so that a cluster whose
	// endpoints are still being probed for the first time is not in panic.
	Pending bool
}

// Snapshot is an immutable view of a cluster for the data path.
type Snapshot struct {
	picker Picker
	// hash is picker as a HashPicker when the policy hashes (see
	// HashPolicy), else nil.
	hash HashPicker
	// HashHeader is the gRPC metadata key a hashing policy places RPCs
	// by (HashPolicy.HashHeader); "" otherwise.
	HashHeader string
	// Routable are the endpoints the picker chooses from.
	Routable []Weighted
	// Healthy and Total count the cluster's members.
	Healthy, Total int
	// Panic is true when fewer than the panic threshold of the judged
	// (not pending) members are healthy; the picker then also uses
	// panic-eligible endpoints.
	Panic bool
}

// excludedRetries is how many picks in a row may land on excluded
// endpoints before Pick looks through the routable ones instead.
const excludedRetries = 3

// Pick returns an endpoint, or nil when no endpoint is routable. An
// endpoint excluded since the snapshot was built is never returned.
func (s *Snapshot) Pick() *Endpoint {
	if s.picker == nil {
		return nil
	}
	if s.hash != nil {
		// A keyless pick: a random hash, whose walk skips excluded
		// endpoints itself.
		return s.hash.PickHash(RandomHash(), nil)
	}
	for range excludedRetries {
		if e := s.picker.Pick(); !e.excluded.Load() {
			return e
		}
	}
	// Many endpoints were excluded since this snapshot was built (a new
	// one is on its way): take the next one that was not, from a random
	// place so that the stale moment does not pile onto one endpoint.
	n := len(s.Routable)
	start := rand.IntN(n)
	for i := range n {
		if e := s.Routable[(start+i)%n].Endpoint; !e.excluded.Load() {
			return e
		}
	}
	return nil
}

// Cluster is one pool of endpoints with the picker currently in force.
type Cluster struct {
	name string
	snap atomic.Pointer[Snapshot]
}

var emptySnapshot = &Snapshot{}

// NewCluster returns a cluster with no endpoints: every pick returns nil
// until the first Update.
func NewCluster(name string) *Cluster {
	c := &Cluster{name: name}
	c.snap.Store(emptySnapshot)
	return c
}

// Name is the cluster's name.
func (c *Cluster) Name() string { return c.name }

// Pick returns an endpoint for one connection or RPC, or nil when no endpoint
// is routable. It neither locks nor allocates.
func (c *Cluster) Pick() *Endpoint { return c.snap.Load().Pick() }

// Snapshot returns the snapshot currently in force.
func (c *Cluster) Snapshot() *Snapshot { return c.snap.Load() }

// Update builds a snapshot from members with policy and swaps it in.
// panicThreshold is a percentage; 0 disables panic mode. Update is not safe
// for concurrent use with itself: one owner rebuilds a cluster, and keeps
// each endpoint's exclusion (Endpoint.SetExcluded) current on its own.
func (c *Cluster) Update(policy Policy, panicThreshold int, members []Member) *Snapshot {
	s := BuildSnapshot(policy, panicThreshold, members)
	c.snap.Store(s)
	return s
}

// PanicMode reports whether a cluster with healthy of its judged (not
// pending) members healthy is in panic under panicThreshold percent.
func PanicMode(panicThreshold, healthy, judged int) bool {
	return panicThreshold > 0 && judged > 0 && healthy*100 < panicThreshold*judged
}

// BuildSnapshot computes the snapshot for members without installing it.
func BuildSnapshot(policy Policy, panicThreshold int, members []Member) *Snapshot {
	s := &Snapshot{Total: len(members)}
	judged := 0
	for _, m := range members {
		if m.Healthy {
			s.Healthy++
		}
		if !m.Pending {
			judged++
		}
	}
	s.Panic = PanicMode(panicThreshold, s.Healthy, judged)
	routable := make([]Weighted, 0, len(members))
	for _, m := range members {
		if m.Healthy || (s.Panic && m.PanicEligible) {
			routable = append(routable, Weighted{Endpoint: m.Endpoint, Weight: max(m.Weight, 1)})
		}
	}
	s.Routable = routable
	hp, hashing := policy.(HashPolicy)
	if hashing {
		s.HashHeader = hp.HashHeader()
	}
	switch {
	case len(routable) == 0:
	case hashing:
		// Placed among every member, so that an endpoint that is not
		// routable keeps its place for when it is again.
		all := make([]Weighted, len(members))
		for i, m := range members {
			all[i] = Weighted{Endpoint: m.Endpoint, Weight: max(m.Weight, 1)}
		}
		s.hash = hp.BuildHash(routable, all)
		s.picker = s.hash
	default:
		s.picker = policy.Build(routable)
	}
	return s
}
