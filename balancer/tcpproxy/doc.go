// Package tcpproxy is vigil's TCP data path: a listener that balances client
// connections over the endpoints of a balancer.Cluster.
//
// For every accepted connection the Proxy picks an endpoint from the
// cluster's current snapshot, dials it (trying other endpoints, a bounded
// number of times, when a dial fails), and copies bytes both ways until both
// directions are done. When no endpoint is routable the client connection is
// closed at once.
//
// Between two plain TCP connections each direction makes its own
// non-blocking system calls: read/write through a pooled buffer while the
// connection moves small chunks (request/response traffic), splice(2)
// through a kernel pipe once it moves bulk, so that bulk bytes never enter
// user space (see copy.go). A listener terminating TLS hands the proxy
// *tls.Conn (see balancer/tlsterm): those bytes are decrypted in user space
// and copied with io.Copy, and the TCP details (resets, kernel counters)
// apply to the socket beneath. The idle timeout costs nothing per byte:
// the connection's handler looks, four times per idle timeout, at the
// kernel's TCP_INFO byte counters of both sockets (elsewhere, at what the
// copies report as they return on read deadlines); see idle.go.
//
// Half-close is forwarded: a FIN from one side becomes a CloseWrite on the
// other and the opposite direction keeps flowing. A reset or error on either
// side aborts the other side with a reset too, so a client never mistakes a
// backend that crashed mid-response for a complete response.
//
// Every goroutine the Proxy starts is owned by it: Shutdown and Close return
// only after every connection handler and copy loop has ended.
package tcpproxy
