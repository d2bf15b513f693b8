package grpcproxy

import "time"

// Metrics receives the data path's events. Implementations must be safe
// for concurrent use and cheap: RPC hooks run on every RPC. Active streams
// are RPCStarted minus RPCFinished calls that named an endpoint; active
// connections are ConnOpened minus ConnClosed.
type Metrics interface {
	// RPCStarted: an RPC of cluster was forwarded to endpoint (the
	// endpoint has its headers).
	RPCStarted(cluster, endpoint string)
	// RPCFinished: an RPC ended with the canonical gRPC code name code
	// ("OK", "UNAVAILABLE", ...): the grpc-status of the backend's
	// trailers, CANCELLED for a reset, or the status the proxy answered.
	// endpoint is "" when none was reached (no healthy upstream, every
	// endpoint tried was unreachable, or the proxy's own health service);
	// then no RPCStarted preceded it. route is the label of the RPC's
	// route (route.Entry.Label: its name, else its index), "" for the
	// listener's default cluster.
	RPCFinished(cluster, route, endpoint, code string, elapsed time.Duration)
	// RPCRetried: endpoint was unreachable before anything was sent and
	// the RPC moved on to another endpoint.
	RPCRetried(cluster, endpoint string)
	// RPCReplayed: endpoint did not process the RPC (reason
	// ReplayRefused: it reset the stream with REFUSED_STREAM; ReplayGoAway:
	// the stream was above its GOAWAY's last-stream-id), and the proxy
	// sent it again on another connection, transparently to the client.
	RPCReplayed(cluster, endpoint, reason string)
	// ConnOpened and ConnClosed count client connections.
	ConnOpened()
	ConnClosed()
	// ConnRejected: a client connection was closed at once because the
	// listener was at MaxConnections.
	ConnRejected()
}
