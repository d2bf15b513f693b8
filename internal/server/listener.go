package server

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/grpcproxy"
	"github.com/vigil-proxy/vigil/balancer/route"
	"github.com/vigil-proxy/vigil/balancer/tcpproxy"
	"github.com/vigil-proxy/vigil/internal/accesslog"
	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/tlsconf"
)

// proxy is what serves a listener: the gRPC or the TCP data path.
type proxy interface {
	Serve(ln net.Listener) error
	Shutdown(ctx context.Context) error
	Close() error
	SetCluster(c *balancer.Cluster)
	SetAccessLog(l *accesslog.Logger)
}

// listenerRT runs one listener: a proxy serving the connections of an
// acceptor.
type listenerRT struct {
	cfg config.Listener
	// routes is the route table in force (the default cluster included)
	// and routesGen counts the tables given to it, so that one waiting
	// for its clusters to be warm knows when a later one superseded it.
	// Both guarded by Server.mu.
	routes    *route.Table
	routesGen uint64
	acc       *acceptor
	vl        *virtualListener
	tls       *listenerTLS // nil: plaintext
	proxy     proxy
	served    chan struct{} // closed when the proxy's Serve returned
}

// acceptorKey names a socket. Two listeners with the same address share
// the socket across a reload (a listener renamed, or two listeners trading
// places); port 0 means "any free port", so such a socket belongs to its
// listener alone.
func acceptorKey(l config.Listener) string {
	if strings.HasSuffix(l.Address, ":0") {
		return l.Name + "@" + l.Address
	}
	return l.Address
}

// sameProxy reports whether a listener's proxy can stay as it is when its
// configuration changes from a to b: only the cluster, the routes, the
// tls section (TLS staying on or off) and the access log may differ, and
// those are swapped in place.
func sameProxy(a, b config.Listener) bool {
	if (a.TLS == nil) != (b.TLS == nil) {
		return false
	}
	return a.SameSettings(b)
}

func (s *Server) newProxy(l config.Listener, routes *route.Table, al *accesslog.Logger) proxy {
	switch l.Protocol {
	case config.ProtocolTCP:
		var c *balancer.Cluster
		if d := routes.Default(); d != nil {
			c = d.Cluster
		}
		return tcpproxy.New(c, tcpproxy.Options{
			IdleTimeout:    l.IdleTimeout,
			MaxConnections: l.MaxConnections,
			Logger:         s.log.With("listener", l.Name),
			Metrics:        s.metrics.tcp(l.Name),
			AccessLog:      al,
			Routes:         routes,
		})
	default:
		return grpcproxy.NewRouted(routes, grpcproxy.Options{
			MaxConcurrentStreams: l.MaxConcurrentStreams,
			MaxMessageSize:       l.MaxMessageSize,
			IdleTimeout:          l.IdleTimeout,
			MaxConnections:       l.MaxConnections,
			Health:               s.health,
			Logger:               s.log.With("listener", l.Name),
			Metrics:              s.metrics.grpc(l.Name),
			AccessLog:            al,
		})
	}
}

// startListener serves l on acc with a new proxy, terminating TLS with src
// when l has a tls section.
func (s *Server) startListener(l config.Listener, acc *acceptor, routes *route.Table, src *tlsconf.Server, al *accesslog.Logger) *listenerRT {
	lr := &listenerRT{
		cfg:    l,
		acc:    acc,
		routes: routes,
		vl:     newVirtualListener(acc.Addr()),
		proxy:  s.newProxy(l, routes, al),
		served: make(chan struct{}),
	}
	var ln net.Listener = lr.vl
	if l.TLS != nil {
		lr.tls = s.newListenerTLS(l, src)
		ln = lr.tls.term.Listen(lr.vl)
	}
	go func() {
		defer close(lr.served)
		if err := lr.proxy.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Error("listener stopped", "listener", l.Name, "address", acc.Addr().String(), "err", err)
		}
	}()
	acc.serve(lr.vl)
	s.log.Info("listening", "listener", l.Name, "address", acc.Addr().String(), "protocol", string(l.Protocol),
		"cluster", l.Cluster, "routes", len(l.Routes), "tls", l.TLS != nil)
	return lr
}

// stop stops accepting and lets the connections in flight finish until ctx
// is done, then cuts them. The socket is left to its acceptor.
func (lr *listenerRT) stop(ctx context.Context) {
	_ = lr.vl.Close()
	if err := lr.proxy.Shutdown(ctx); err != nil {
		_ = lr.proxy.Close()
	}
	<-lr.served
	lr.tls.close()
}
