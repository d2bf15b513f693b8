// Package ringhash is the ring_hash load-balancing policy: consistent
// hashing on a Ketama-style ring, so that connections or RPCs with the same
// key reach the same endpoint, and an endpoint that leaves moves only the
// keys it had.
//
// Importing the package registers the policy under the name "ring_hash"
// (with the default ring size and no header; the server builds a Policy
// from each cluster's hash section).
//
// The ring. Each member of the cluster gets a number of points on a 64-bit
// circle in proportion to its weight, round(size·w/Σw) and at least one,
// where size is the configured ring size or the number of members if that
// is larger. Point j of an endpoint sits at xxHash64("address_j"), as
// Envoy places them, so that the ring depends only on the members'
// addresses and weights: not on the order they are listed in, not on the
// process (several vigil replicas build the same ring). A key's hash (see
// balancer.HashString, HashIP) goes to the endpoint of the first point at
// or after it, wrapping around: one binary search over a sorted []uint64.
//
// Failover without moving other keys. The counts come from every member,
// routable or not, but only the routable endpoints' points are on the
// picker's ring. That ring is exactly the members' ring with the points of
// the endpoints that are not routable taken out, so a key whose first
// point belongs to an evicted endpoint goes on to the next point of the
// full ring that belongs to a routable one, and every other key stays
// where it was; readmission puts the points back and those keys return.
// (Rebuilding the ring over the healthy endpoints alone, with size
// redistributed among them, would give the survivors more points and move
// keys among them too.) An endpoint excluded since the ring was built
// (evicted a moment ago) and the endpoints a retry already tried are
// skipped by walking on along the ring, which sends those keys where the
// next rebuilt ring will send them.
//
// Membership changes (an endpoint added or removed, a weight changed)
// rebuild the ring with the counts of the new member set. The ring keeps
// its size, so when one of N endpoints leaves, its 1/N of the keys move
// and the survivors' extra points take about as many again from one
// another (see BenchmarkKeysMoved). That is what keeping ring_size fixed
// costs; Envoy and gRPC rings do the same.
//
// A pick is a binary search over the hashes, narrowed first by an index of
// the hashes' top bits to the 4 or so points of one bucket, and a walk that
// almost always stops at the first point; it neither locks nor allocates. A request without a
// key (no header) gets a random hash, hence a random endpoint by weight.
package ringhash

import (
	"cmp"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/vigil-proxy/vigil/balancer"
)

// Name is the policy's name in the configuration (lb_policy).
const Name = "ring_hash"

// Ring sizes.
const (
	// DefaultRingSize is the ring size when the configuration gives none:
	// with 16,384 points the worst of 5 endpoints gets within 9% of an
	// even share of 10,000 keys (over 200 random sets of addresses; 15%
	// at 4,096, more at Envoy's 1,024), for a ring of 256 KiB
	// and a 1.5 ms rebuild at 1,000 endpoints (TestSpreadOverRandomAddresses,
	// BenchmarkBuild).
	DefaultRingSize = 16384
	// MaxRingSize bounds the ring: 2^20 points (16 MiB, built in about
	// 150 ms for 1,000 endpoints) is more than any balance needs, and
	// every health change rebuilds the ring.
	MaxRingSize = 1 << 20
)

func init() { balancer.Register(Policy{}) }

// Policy is the ring_hash policy. The zero value has no header and the
// default ring size. Policies are compared with ==: a change of either
// field is a policy change for the pool.
type Policy struct {
	// Header is the gRPC metadata key grpc listeners hash.
	Header string
	// RingSize is the number of points on the ring (at least the number of
	// members); 0 means DefaultRingSize, and it is capped at MaxRingSize.
	RingSize int
}

// Name returns "ring_hash".
func (Policy) Name() string { return Name }

// HashHeader returns p.Header.
func (p Policy) HashHeader() string { return p.Header }

func (p Policy) ringSize() int {
	switch {
	case p.RingSize <= 0:
		return DefaultRingSize
	case p.RingSize > MaxRingSize:
		return MaxRingSize
	}
	return p.RingSize
}

// Build returns a ring over endpoints, all of them members.
func (p Policy) Build(endpoints []balancer.Weighted) balancer.Picker {
	return p.BuildHash(endpoints, endpoints)
}

// BuildHash returns a ring over routable placed among members (see the
// package doc). A zero weight counts as 1.
func (p Policy) BuildHash(routable, members []balancer.Weighted) balancer.HashPicker {
	switch len(routable) {
	case 0:
		return none{}
	case 1:
		return single{routable[0].Endpoint}
	}
	size := uint64(max(p.ringSize(), len(members)))
	var total uint64
	for _, m := range members {
		total += uint64(max(m.Weight, 1))
	}
	counts := make([]uint64, len(routable))
	var points uint64
	for i, r := range routable {
		// size ≤ 2^20 and weights < 2^32: no overflow.
		counts[i] = max(1, (size*uint64(max(r.Weight, 1))+total/2)/total)
		points += counts[i]
	}
	entries := make([]entry, 0, points)
	var buf []byte
	for i, r := range routable {
		buf = append(append(buf[:0], r.Endpoint.Address()...), '_')
		base := len(buf)
		for j := range counts[i] {
			buf = strconv.AppendUint(buf[:base], j, 10)
			entries = append(entries, entry{balancer.HashBytes(buf), r.Endpoint})
		}
	}
	sortEntries(entries)
	r := &ring{hashes: make([]uint64, len(entries)), owners: make([]*balancer.Endpoint, len(entries))}
	for i, e := range entries {
		r.hashes[i], r.owners[i] = e.hash, e.ep
	}
	r.index()
	return r
}

type entry struct {
	hash uint64
	ep   *balancer.Endpoint
}

// sortEntries sorts entries by hash, then address: ties (two points at the
// same hash, about one in 2^64/points^2) are broken by address so that the
// ring does not depend on the order of the members. It is an LSD radix
// sort, 8 passes of one byte: about 5 times faster than a comparison sort
// at 16,384 points, and the ring is rebuilt at every health change.
func sortEntries(entries []entry) {
	if len(entries) < 256 {
		slices.SortFunc(entries, compareEntries)
		return
	}
	tmp := make([]entry, len(entries))
	src, dst := entries, tmp
	var counts [256]int
	for shift := uint(0); shift < 64; shift += 8 {
		counts = [256]int{}
		for i := range src {
			counts[byte(src[i].hash>>shift)]++
		}
		if counts[byte(src[0].hash>>shift)] == len(src) {
			continue // every hash has this byte: nothing to move
		}
		pos := 0
		for b, c := range counts {
			counts[b] = pos
			pos += c
		}
		for i := range src {
			b := byte(src[i].hash >> shift)
			dst[counts[b]] = src[i]
			counts[b]++
		}
		src, dst = dst, src
	}
	if &src[0] != &entries[0] {
		copy(entries, src)
	}
	for i := 1; i < len(entries); i++ {
		if entries[i].hash == entries[i-1].hash {
			j := i + 1
			for j < len(entries) && entries[j].hash == entries[i].hash {
				j++
			}
			slices.SortFunc(entries[i-1:j], compareEntries)
			i = j - 1
		}
	}
}

func compareEntries(a, b entry) int {
	if c := cmp.Compare(a.hash, b.hash); c != 0 {
		return c
	}
	return strings.Compare(a.ep.Address(), b.ep.Address())
}

// ring is the picker: the points' hashes, sorted, and their endpoints.
// Hashes and owners are separate so that the binary search reads a dense
// array of hashes.
type ring struct {
	hashes []uint64
	owners []*balancer.Endpoint
	// starts[b] is the first point whose hash's top bits are b or more
	// (len(hashes) for none), with len(starts) = 2^bits + 1: a pick's
	// binary search only looks at the points of its hash's bucket, about
	// 4, instead of walking down from the middle of the whole ring, which
	// at 16,384 points costs a dozen dependent cache misses.
	starts []uint32
	shift  uint // 64 - bits
}

// index builds r.starts, with one bucket per 4 points or so.
func (r *ring) index() {
	n := len(r.hashes)
	b := max(1, bits.Len(uint(n))-2)
	r.shift = uint(64 - b)
	r.starts = make([]uint32, 1<<b+1)
	i := 0
	for bucket := range r.starts {
		for i < n && r.hashes[i]>>r.shift < uint64(bucket) {
			i++
		}
		r.starts[bucket] = uint32(i)
	}
}

// Pick returns the endpoint of a random hash: by weight, like a keyless
// request.
func (r *ring) Pick() *balancer.Endpoint { return r.PickHash(rand.Uint64(), nil) }

// PickHash returns the owner of the first point at or after h that is
// neither excluded nor in skip.
func (r *ring) PickHash(h uint64, skip []*balancer.Endpoint) *balancer.Endpoint {
	n := len(r.hashes)
	// The first point at or after h is in h's bucket, or it is the first
	// point of a later one, which is where the search ends if not.
	b := h >> r.shift
	lo, hi := int(r.starts[b]), int(r.starts[b+1])
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r.hashes[m] < h {
			lo = m + 1
		} else {
			hi = m
		}
	}
	// lo is n when h is past the last point: it wraps to the first.
	for k := range n {
		i := lo + k
		if i >= n {
			i -= n
		}
		if e := r.owners[i]; !e.Excluded() && !slices.Contains(skip, e) {
			return e
		}
	}
	return nil
}

// Size is the number of points on the ring.
func (r *ring) Size() int { return len(r.hashes) }

type none struct{}

func (none) Pick() *balancer.Endpoint                                 { return nil }
func (none) PickHash(uint64, []*balancer.Endpoint) *balancer.Endpoint { return nil }

// single is the ring of one routable endpoint: every key is its.
type single struct{ e *balancer.Endpoint }

func (p single) Pick() *balancer.Endpoint { return p.PickHash(0, nil) }

func (p single) PickHash(_ uint64, skip []*balancer.Endpoint) *balancer.Endpoint {
	if p.e.Excluded() || slices.Contains(skip, p.e) {
		return nil
	}
	return p.e
}
