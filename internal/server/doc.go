// Package server is vigil's wiring: it turns a configuration into a pool
// per cluster (balancer/pool, which owns the cluster's endpoints, their
// health, its checker group and its balancer) and a proxy per listener,
// applies a reload to each pool and listener as the difference against
// what runs, logs `config reloaded` from the plans that were applied, and
// shuts everything down in order.
//
// The pools report every change as events to four sinks, in this order:
// the state store (the read model the admin API serves), the metrics, the
// proxy's own health service, and the eviction log. Nothing else writes
// health anywhere.
//
// Ownership: the Server owns one runtime per cluster (its pool) and one
// per listener (its proxy). Sockets are owned by acceptors, shared by
// address, so that a reload that keeps an address keeps its socket. The
// server's own goroutines (the readiness wait, the retirement of removed
// clusters once drained, listeners and admin servers being retired) stop
// with Shutdown. Locks: mu (the configuration in force and the runtimes),
// then healthMu (the proxy's own health); a pool's sinks take healthMu
// only.
package server
