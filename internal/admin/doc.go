// Package admin is vigil's admin HTTP API and its client:
//
//	GET /clusters   every cluster and endpoint with its health, as JSON
//	GET /ready      200 while the proxy is ready and not shutting down, else 503
//	GET /metrics    Prometheus text format (a prometheus.Gatherer)
//	GET /events     the eviction log as server-sent events, live, with a
//	                replay of recent records on connect
//	GET /           in a browser: the status page (page.go), live over
//	                GET /ui/stream (page_stream.go), fed by a hub that
//	                follows the store from Serve to Shutdown (page_hub.go)
//
// The server reads everything from the state store (go-memdb): /clusters
// reads one consistent snapshot, /events follows the store's events table
// with watch channels. It is built so that it cannot hurt the data path:
// header and body read timeouts, per-write deadlines, a bounded number of
// concurrent requests and of event streams, and streams that end promptly
// on Shutdown.
//
// The client side (Client, RenderStatus, Status) is what `vigil status`
// uses to print a table of clusters and endpoints and to follow /events.
package admin
