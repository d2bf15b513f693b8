package config

import "time"

// Config is one validated vigil configuration with every default filled in.
// A *Config is never modified after Load returns it; reloads build a new one.
type Config struct {
	// File is the path the configuration was read from.
	File string

	Admin     Admin
	Log       Log
	Shutdown  Shutdown
	Listeners []Listener
	Clusters  []Cluster
}

// Admin configures the admin HTTP server.
type Admin struct {
	// Address is host:port; "" disables the admin server.
	Address string
}

// LogFormat is the encoding of log records.
type LogFormat string

// Log formats.
const (
	LogText LogFormat = "text"
	LogJSON LogFormat = "json"
)

// Log configures vigil's logger.
type Log struct {
	Format LogFormat
	Level  string // debug | info | warn | error
}

// Shutdown configures the graceful stop on SIGTERM/SIGINT.
type Shutdown struct {
	// DrainDelay is how long listeners keep accepting after the proxy's own
	// health turned NOT_SERVING, so load balancers in front can notice.
	DrainDelay time.Duration
	// Timeout bounds how long in-flight work may take to finish.
	Timeout time.Duration
}

// Protocol is what a listener speaks.
type Protocol string

// Listener protocols.
const (
	ProtocolGRPC Protocol = "grpc"
	ProtocolTCP  Protocol = "tcp"
)

// Listener accepts client traffic for one cluster.
type Listener struct {
	Name     string
	Address  string
	Protocol Protocol
	Cluster  string

	// MaxConcurrentStreams caps the streams of one client HTTP/2 connection
	// (grpc listeners).
	MaxConcurrentStreams uint32
	// MaxMessageSize caps one gRPC message in bytes, in either direction
	// (grpc listeners).
	MaxMessageSize int
	// IdleTimeout closes a client connection that has carried nothing for
	// this long: no stream open (grpc) or no byte either way (tcp).
	IdleTimeout time.Duration
	// MaxConnections caps concurrent client connections; 0 is no cap.
	MaxConnections int

	// Pos is where the listener is declared, for error messages.
	Pos Pos
}

// LBPolicy names a load-balancing policy.
type LBPolicy string

// Load-balancing policies.
const (
	RoundRobin   LBPolicy = "round_robin"
	LeastRequest LBPolicy = "least_request"
	Random       LBPolicy = "random"
)

// Cluster is a pool of interchangeable endpoints.
type Cluster struct {
	Name     string
	LBPolicy LBPolicy
	// PanicThreshold is a percentage (0-100); 0 disables panic mode.
	PanicThreshold int
	Endpoints      []Endpoint
	HealthCheck    HealthCheck

	Pos Pos
}

// Endpoint is one backend address in a cluster.
type Endpoint struct {
	Address string
	Weight  uint32

	Pos Pos
}

// CheckMode is how endpoints are health-checked.
type CheckMode string

// Health-check modes.
const (
	CheckGRPC  CheckMode = "check"
	CheckWatch CheckMode = "watch"
	CheckTCP   CheckMode = "tcp"
	CheckNone  CheckMode = "none"
)

// OnUnimplemented is what an UNIMPLEMENTED answer to a health RPC means.
type OnUnimplemented string

// Policies for UNIMPLEMENTED.
const (
	UnimplementedEvict OnUnimplemented = "evict"
	UnimplementedServe OnUnimplemented = "serve"
)

// Liveness is how a quiet Watch stream's connection is proven alive.
type Liveness string

// Liveness mechanisms.
const (
	// LivenessKeepalive: kernel TCP keepalive with a user timeout. Free in
	// the process; notices a host or path that stops answering at the TCP
	// level (powered off, blackholed).
	LivenessKeepalive Liveness = "keepalive"
	// LivenessCheck: keepalive, and a Check every interval while the
	// stream is quiet. Also notices a frozen process and a path through a
	// userspace proxy that stops forwarding, for one RPC per endpoint per
	// interval.
	LivenessCheck Liveness = "check"
)

// HealthCheck configures the active health checks of a cluster.
type HealthCheck struct {
	Mode     CheckMode
	Service  string
	Interval time.Duration
	Timeout  time.Duration
	// Jitter is the +/- spread of each interval as a fraction (0.1 = 10%).
	Jitter             float64
	UnhealthyThreshold int
	HealthyThreshold   int
	OnUnimplemented    OnUnimplemented
	// Liveness applies to watch mode (see Liveness).
	Liveness Liveness
}

// Pos is a position in the configuration file.
type Pos struct {
	Line, Col int
}
