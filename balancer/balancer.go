// Package balancer spreads traffic over the healthy endpoints of a cluster.
//
// A Cluster holds an immutable Snapshot behind an atomic pointer: picking an
// endpoint (once per TCP connection or per RPC) reads the snapshot and asks
// its Picker, with no lock and no allocation. Update builds a new snapshot
// whenever the endpoints or their health change and swaps it in.
//
// Load-balancing policies live in subpackages (roundrobin, leastrequest,
// random, ringhash, maglev) and register themselves by name; import them
// for their side effect, as with database/sql drivers. A hashing policy
// (HashPolicy: ring_hash, maglev) places each connection or RPC by a hash
// of its key: the data paths pick with PickHash, which the other policies
// answer as Pick.
package balancer

import (
	"crypto/tls"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
)

// Endpoint is one backend as the data path sees it. The same *Endpoint is
// kept across snapshots for as long as the endpoint stays in the cluster, so
// its in-flight count survives rebuilds.
type Endpoint struct {
	address  string
	inflight atomic.Int64
	// excluded is read by every pick of every snapshot holding the
	// endpoint (see Exclude); it sits next to inflight, which a pick's
	// caller writes anyway.
	excluded atomic.Bool
	// out counts the outcomes the data paths report (see Report).
	out outcomes

	closeOnce sync.Once
	closed    chan struct{}

	// tls is how new connections to the endpoint are secured; nil box or
	// nil TLS: plaintext.
	tls atomic.Pointer[tlsBox]
}

// TLS gives the data paths' connections to endpoints their TLS
// configuration: vigil's is internal/tlsconf's Client, whose files reload
// as they change. It has checker.TLS's method, so one value serves both.
type TLS interface {
	// ClientConfig is the configuration of a new connection to address;
	// h2 asks for ALPN h2. It is called at every dial, and its result is
	// not modified.
	ClientConfig(address string, h2 bool) *tls.Config
}

type tlsBox struct{ t TLS }

// NewEndpoint returns an endpoint for address. The data paths keep their
// own connections to it, and close them when the endpoint is closed.
func NewEndpoint(address string) *Endpoint {
	return &Endpoint{address: address, closed: make(chan struct{})}
}

// Close tells the data paths that e is gone for good: a removed endpoint
// whose drain timeout expired. Connections and streams still open to it are
// cut. Close is idempotent.
func (e *Endpoint) Close() { e.closeOnce.Do(func() { close(e.closed) }) }

// Closed is closed by Close.
func (e *Endpoint) Closed() <-chan struct{} { return e.closed }

// Address is the endpoint's host:port.
func (e *Endpoint) Address() string { return e.address }

// SetExcluded takes e out of every snapshot's picks at once (true), or
// lets the snapshots that hold e pick it again (false), without waiting
// for a snapshot built without or with it. A cluster's owner keeps it
// equal to "e may not be picked now", setting it the moment e becomes
// unfit (evicted) and clearing it the moment e is fit again, so that no
// new connection or RPC goes to an unfit e even through a picker built
// before. An Endpoint belongs to one Cluster.
func (e *Endpoint) SetExcluded(excluded bool) { e.excluded.Store(excluded) }

// SetTLS makes new connections to e use t (nil: plaintext). Connections
// already open keep the transport they were made with.
func (e *Endpoint) SetTLS(t TLS) {
	if t == nil {
		e.tls.Store(nil)
		return
	}
	e.tls.Store(&tlsBox{t: t})
}

// TLSConfig is the TLS configuration of a new connection to e, with ALPN
// h2 if h2 is set; nil means plaintext. The result is shared: never
// modify it.
func (e *Endpoint) TLSConfig(h2 bool) *tls.Config {
	b := e.tls.Load()
	if b == nil {
		return nil
	}
	return b.t.ClientConfig(e.address, h2)
}

// Excluded reports whether e may not be picked now.
func (e *Endpoint) Excluded() bool { return e.excluded.Load() }

// Acquire counts one more connection or RPC in flight on e.
func (e *Endpoint) Acquire() { e.inflight.Add(1) }

// Release counts one connection or RPC in flight on e as finished.
func (e *Endpoint) Release() { e.inflight.Add(-1) }

// Inflight is the number of connections or RPCs in flight on e.
func (e *Endpoint) Inflight() int64 { return e.inflight.Load() }

// Weighted is an endpoint with its relative weight (at least 1).
type Weighted struct {
	Endpoint *Endpoint
	Weight   uint32
}

// Picker chooses an endpoint for one connection or RPC. A Picker is
// immutable and safe for concurrent use; Pick must neither lock nor allocate.
type Picker interface {
	// Pick returns an endpoint, or nil when the picker has none.
	Pick() *Endpoint
}

// Policy builds pickers over a set of weighted endpoints.
type Policy interface {
	// Name is the policy's name in the configuration, e.g. "round_robin".
	Name() string
	// Build returns a picker over endpoints; endpoints is never empty and is
	// owned by the picker once passed.
	Build(endpoints []Weighted) Picker
}

var (
	policiesMu sync.RWMutex
	policies   = map[string]Policy{}
)

// Register makes a policy available by name. It panics if the name is
// taken, since that can only be a programming error.
func Register(p Policy) {
	policiesMu.Lock()
	defer policiesMu.Unlock()
	if _, dup := policies[p.Name()]; dup {
		panic(fmt.Sprintf("balancer: policy %q registered twice", p.Name()))
	}
	policies[p.Name()] = p
}

// PolicyByName returns the registered policy called name.
func PolicyByName(name string) (Policy, bool) {
	policiesMu.RLock()
	defer policiesMu.RUnlock()
	p, ok := policies[name]
	return p, ok
}

// Policies lists the registered policy names, sorted.
func Policies() []string {
	policiesMu.RLock()
	defer policiesMu.RUnlock()
	names := make([]string, 0, len(policies))
	for n := range policies {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
