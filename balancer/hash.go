package balancer

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Keys. A hashing policy (ring_hash) places each connection or RPC by a
// 64-bit hash of a key the data path takes from it: the value of a gRPC
// metadata key (grpc listeners, see HashPolicy.HashHeader) or the client's
// IP address (tcp listeners). The hash is xxHash64 (XXH64, seed 0), the
// one Envoy's ring_hash uses: stable across processes, machines and
// versions of vigil, so that several vigil replicas send a key to the same
// backend, and fast (a few ns for a short key, no allocation).

// HashString is the hash of the key s.
func HashString(s string) uint64 { return xxhash.Sum64String(s) }

// HashBytes is the hash of the key b.
func HashBytes(b []byte) uint64 { return xxhash.Sum64(b) }

// HashIP is the hash of a client's IP address: the 16 bytes of its IPv6
// form (an IPv4 address as IPv4-mapped), so that 192.0.2.1 and
// ::ffff:192.0.2.1, the same client, get the same hash. The port is not
// part of it. Without an IP address (a Unix socket, a nil addr) it is a
// random hash: the connection goes to a random endpoint.
func HashIP(addr net.Addr) uint64 {
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	}
	if !ip.IsValid() {
		return RandomHash()
	}
	b := ip.As16()
	return xxhash.Sum64(b[:])
}

// RandomHash is the hash of a request without a key: a random one, so that
// keyless requests spread over the endpoints by weight.
func RandomHash() uint64 { return rand.Uint64() }

// HashPicker is a Picker that places a request by the hash of its key.
type HashPicker interface {
	Picker
	// PickHash returns the endpoint for a request whose key hashes to h:
	// the same one for the same h for as long as that endpoint is
	// routable, otherwise the policy's next choice for h, never an
	// excluded endpoint nor one in skip (the endpoints a retry already
	// tried). It returns nil when there is none, and neither locks nor
	// allocates.
	PickHash(h uint64, skip []*Endpoint) *Endpoint
}

// HashPolicy is a Policy that places requests by the hash of a key.
// BuildSnapshot builds its pickers with BuildHash.
type HashPolicy interface {
	Policy
	// HashHeader is the gRPC metadata key whose value grpc listeners hash;
	// "" when there is none (every RPC then gets a random endpoint). tcp
	// listeners hash the client's IP address (HashIP).
	HashHeader() string
	// BuildHash returns a picker over routable (never empty) that places
	// the routable endpoints as they would be placed among members, the
	// cluster's every member, routable or not (a subset of members with the
	// same weights). So an endpoint that stops being routable (evicted)
	// moves only the keys it had, and gets them back when it returns.
	BuildHash(routable, members []Weighted) HashPicker
}

// PickHash returns an endpoint not in skip for a request whose key hashes
// to h, or nil when no endpoint is routable. A hashing policy places it by
// h (see HashPicker); the other policies ignore h and pick as Pick does,
// looking through the routable endpoints for one not in skip should the
// policy keep choosing tried ones (random may), so that a retry is never
// lost to bad luck. An endpoint excluded since the snapshot was built is
// never returned. It neither locks nor allocates.
func (s *Snapshot) PickHash(h uint64, skip []*Endpoint) *Endpoint {
	if s.hash != nil {
		return s.hash.PickHash(h, skip)
	}
	for range excludedRetries {
		e := s.Pick()
		if e == nil {
			return nil
		}
		if !slices.Contains(skip, e) {
			return e
		}
	}
	n := len(s.Routable)
	start := rand.IntN(n)
	for i := range n {
		if e := s.Routable[(start+i)%n].Endpoint; !e.excluded.Load() && !slices.Contains(skip, e) {
			return e
		}
	}
	return nil
}

// PickHash is Snapshot.PickHash on the snapshot currently in force.
func (c *Cluster) PickHash(h uint64, skip []*Endpoint) *Endpoint {
	return c.snap.Load().PickHash(h, skip)
}
