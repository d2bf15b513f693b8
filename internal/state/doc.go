// Package state is vigil's read model: the clusters and endpoints with
// their health, the listeners of the configuration in force, and the recent
// eviction-log events, held in a go-memdb database for the admin API and
// the metrics to read.
//
// It owns none of it. Each cluster's pool (balancer/pool) owns its
// endpoints and their health and reports every change as events; the Store
// is one of its sinks (Handle), and writes what the events say, one
// transaction per batch. The server writes the listeners, and the eviction
// log appends the events. Writers copy an object, change the copy and
// insert it; nothing read from the store is ever modified. Readers pass a
// memdb.WatchSet to learn when what they read has changed.
package state
