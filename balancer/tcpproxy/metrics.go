package tcpproxy

import "time"

// Outcome says how a client connection ended. Outcomes are stable strings,
// suitable as metric label values.
type Outcome string

// Connection outcomes.
const (
	// OutcomeOK: both directions ended normally (FIN both ways).
	OutcomeOK Outcome = "ok"
	// OutcomeNoHealthyUpstream: the cluster had no routable endpoint.
	OutcomeNoHealthyUpstream Outcome = "no_healthy_upstream"
	// OutcomeConnectFailed: every dial attempt failed.
	OutcomeConnectFailed Outcome = "connect_failed"
	// OutcomeOverLimit: MaxConnections was reached; the connection was
	// closed as soon as it was accepted.
	OutcomeOverLimit Outcome = "over_limit"
	// OutcomeIdleTimeout: the pair carried no byte for IdleTimeout, or a
	// peer stopped accepting data for that long.
	OutcomeIdleTimeout Outcome = "idle_timeout"
	// OutcomeEndpointClosed: the endpoint was removed and its drain
	// deadline passed (balancer.Endpoint.Close).
	OutcomeEndpointClosed Outcome = "endpoint_closed"
	// OutcomeShutdown: the proxy was closed, or its Shutdown deadline
	// passed, while the connection was open.
	OutcomeShutdown Outcome = "shutdown"
	// OutcomeNoRoute: routing by SNI found no route for the connection's
	// server name and the listener has no cluster of its own.
	OutcomeNoRoute Outcome = "no_route"
	// OutcomeBadHello: routing by SNI read a malformed, oversized or cut
	// TLS ClientHello.
	OutcomeBadHello Outcome = "bad_hello"
	// OutcomeError: a side reset the connection or a copy failed.
	OutcomeError Outcome = "error"
)

// ConnStats describes one client connection once it has ended.
type ConnStats struct {
	// Cluster is the name of the cluster the connection was balanced over
	// ("" when the proxy had no cluster).
	Cluster string
	// Endpoint is the address of the endpoint that carried the connection,
	// "" when it was never connected to one.
	Endpoint string
	// Outcome says how the connection ended.
	Outcome Outcome
	// Route is the label of the SNI route that took the connection, ""
	// for the listener's cluster; SNI the server name it was routed by.
	Route, SNI string
	// Attempts counts the endpoints dialled (0 when none was picked).
	Attempts int
	// BytesToUpstream and BytesToClient count the bytes forwarded from the
	// client to the endpoint and back.
	BytesToUpstream, BytesToClient int64
	// Duration runs from accept to close.
	Duration time.Duration
}

// Metrics receives the proxy's connection events. Methods are called from
// the connection goroutines concurrently and must be cheap and safe for
// concurrent use; a nil Metrics in Options is allowed.
//
// The connections active on an endpoint are the ConnectionOpened calls for
// it minus the ConnectionClosed calls whose Endpoint is that endpoint. The
// proxy's own count of open client connections is Proxy.ActiveConnections.
type Metrics interface {
	// ConnectionOpened is called when a client connection has been
	// connected to endpoint.
	ConnectionOpened(cluster, endpoint string)
	// DialFailed is called for every failed attempt to connect to an
	// endpoint; the proxy may then try another one.
	DialFailed(cluster, endpoint string, err error)
	// ConnectionClosed is called exactly once for every client connection
	// the proxy accepted, rejected ones included, when it is done.
	ConnectionClosed(stats ConnStats)
}

type noMetrics struct{}

func (noMetrics) ConnectionOpened(string, string)  {}
func (noMetrics) DialFailed(string, string, error) {}
func (noMetrics) ConnectionClosed(ConnStats)       {}
