// Package server runs vigil: it turns a configuration into listeners,
// balancers and health checkers, keeps the state store in step with them,
// applies reloads as a difference against what runs, and shuts everything
// down in order.
//
// Ownership: the Server owns one runtime per cluster and one per listener.
// A cluster runtime owns its checker group, its balancer, the data
// connections of its endpoints and the goroutines that rebuild its picker
// and drain removed endpoints. A listener runtime owns its proxy; sockets are
// owned by acceptors, shared by address, so that a reload that keeps an
// address keeps its socket.
package server
