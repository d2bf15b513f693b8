// Package state is vigil's source of truth: the clusters, endpoints and
// listeners of the configuration in force, every endpoint's health, and the
// recent eviction-log events, held in a go-memdb database.
//
// Writers (the reload and the health checkers) copy an object, change the
// copy and insert it; nothing read from the store is ever modified. Readers
// pass a memdb.WatchSet to learn when what they read has changed: the
// balancer rebuilds a cluster's picker, the admin API streams events, and
// the proxy's own health status follows the clusters.
package state
