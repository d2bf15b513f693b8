package discovery

import (
	"net"
	"strconv"
	"time"
)

// Kind is where a cluster's endpoints are discovered.
type Kind string

// Kinds of discovery, as the configuration names them; an endpoint's source.
const (
	KindDNS        Kind = "dns"
	KindSRV        Kind = "srv"
	KindKubernetes Kind = "kubernetes"
)

// Defaults and limits.
const (
	DefaultRefresh = 5 * time.Second
	// MinRefresh bounds how often a name is re-resolved.
	MinRefresh = 100 * time.Millisecond
	// DefaultNamespace is the Kubernetes namespace when none is given.
	DefaultNamespace = "default"
	// MaxWeight is the largest endpoint weight vigil balances with; SRV
	// weights above it are clamped to it.
	MaxWeight = 10000
)

// Spec says where a cluster's endpoints come from. A Spec is a value:
// two equal Specs discover the same thing, so a reload that leaves a Spec
// equal leaves its Watcher running.
type Spec struct {
	Kind Kind
	// Name is the host name to resolve (dns) or the SRV name (srv).
	Name string
	// Port is the port of every address found (dns).
	Port uint16
	// Kubernetes is the Service to watch (kubernetes).
	Kubernetes Kubernetes
	// Refresh is how often names are re-resolved (dns, srv), at most; a
	// shorter TTL re-resolves sooner.
	Refresh time.Duration
	// Resolver is host:port of the DNS server (dns, srv); "" means the
	// servers and search domains of /etc/resolv.conf.
	Resolver string
}

// Kubernetes names a Service whose EndpointSlices are the endpoints.
type Kubernetes struct {
	Service   string
	Namespace string
	// PortName is the name of the Service port whose endpoints are taken;
	// with PortNumber 0 and PortName "", the slice's only unnamed port.
	PortName string
	// PortNumber, when not 0, picks the endpoints' port by number (the
	// port the endpoints listen on, as the EndpointSlice lists it).
	PortNumber int32
	// Kubeconfig is the path of a kubeconfig file; "" means the in-cluster
	// configuration (the pod's service account).
	Kubeconfig string
}

// String describes the spec for log records: "dns orders.svc:50051",
// "srv _grpc._tcp.orders", "kubernetes default/orders:grpc".
func (s Spec) String() string {
	switch s.Kind {
	case KindDNS:
		return "dns " + net.JoinHostPort(s.Name, strconv.Itoa(int(s.Port)))
	case KindSRV:
		return "srv " + s.Name
	case KindKubernetes:
		return "kubernetes " + s.Kubernetes.String()
	}
	return string(s.Kind)
}

// String is namespace/service:port.
func (k Kubernetes) String() string {
	port := k.PortName
	if k.PortNumber != 0 {
		port = strconv.Itoa(int(k.PortNumber))
	}
	return k.Namespace + "/" + k.Service + ":" + port
}
