// Package discovery finds a cluster's endpoints by themselves: from DNS A and
// AAAA records (dns), from SRV records and their targets' addresses (srv),
// or from the EndpointSlices of a Kubernetes Service (kubernetes).
//
// A Watcher runs one source and reports what it finds as typed Events to a
// handler: Updated with the complete new set when it differs from the last
// one, Unchanged when a lookup found the same set, Failed when a lookup
// failed (the last good set stays in force; First marks the start of a
// failure streak, the one to log), Recovered when lookups succeed again.
// An authoritative empty answer (NXDOMAIN, no records, a Service without
// ready endpoints) is a success with an empty set. Discovery never decides
// health: the handler hands the sets to the cluster's pool, whose probes do.
//
// DNS uses github.com/miekg/dns rather than Go's resolver, which hides TTLs
// and cannot tell NXDOMAIN from SERVFAIL reliably: a dns or srv source
// re-resolves every refresh, or sooner when a record's TTL is shorter.
// Kubernetes uses a client-go informer (watched, not polled) on the
// Service's EndpointSlices; ready endpoints are candidates, serving and
// terminating ones are draining, the others are left out.
//
// Goroutines: Start starts one goroutine per Watcher, which owns the source
// and calls the handler (never concurrently, never after Stop returns). An
// srv lookup resolves its targets on a bounded set of goroutines that end
// before the lookup returns. A kubernetes source runs its informer on
// goroutines of client-go's that end when the Watcher stops; Stop cancels and
// waits for all of them, then closes the source's idle connections.
package discovery
