package config

import (
	"log/slog"
	"time"

	"github.com/vigil-proxy/vigil/balancer/outlier"
	"github.com/vigil-proxy/vigil/balancer/slowstart"
	"github.com/vigil-proxy/vigil/balancer/wrr"
	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/discovery"
)

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

	// Warnings are problems that do not keep the configuration from being
	// served (a route that can never match), sorted by position: `vigil
	// validate` prints them, `vigil run` logs them.
	Warnings ErrorList
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

// Listener accepts client traffic for its cluster, or for the clusters
// its routes name.
type Listener struct {
	Name     string
	Address  string
	Protocol Protocol
	// Cluster takes the traffic no route matches; "" for none (only with
	// routes).
	Cluster string
	// Routes are tried in order; the first that matches wins.
	Routes []Route

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

	// TLS terminates TLS on the listener; nil: plaintext (h2c for grpc).
	TLS *ListenerTLS

	// AccessLog is the listener's access log; Path "" is off.
	AccessLog AccessLog

	// Pos is where the listener is declared, for error messages.
	Pos Pos
}

// AccessLog configures a listener's access log: one record per RPC (grpc)
// or connection (tcp).
type AccessLog struct {
	// Path is "" (off), "stdout", "stderr" or a file path as written
	// (Config.FilePath resolves it), reopened on SIGUSR1.
	Path string
	// Format is json or text (key=value).
	Format LogFormat
	// Buffer is how many records wait for the writer at most; more are
	// dropped and counted.
	Buffer int

	// PathPos is where path's value is, for the errors of opening it.
	PathPos Pos
}

// On reports whether the access log is on.
func (a AccessLog) On() bool { return a.Path != "" }

// Same reports whether a and o are the same settings, positions aside.
func (a AccessLog) Same(o AccessLog) bool {
	return a.Path == o.Path && a.Format == o.Format && a.Buffer == o.Buffer
}

// TLSVersion is a TLS protocol version as written in the configuration.
type TLSVersion string

// TLS versions a listener may require at least.
const (
	TLS12 TLSVersion = "1.2"
	TLS13 TLSVersion = "1.3"
)

// ListenerTLS configures the TLS a listener terminates. File paths are as
// written; Config.FilePath resolves them.
type ListenerTLS struct {
	// Certificates are the certificates served, chosen by the client's
	// SNI against each certificate's names (wildcards too); the first is
	// the default for an unknown or absent SNI. cert_file and key_file
	// make a list of one.
	Certificates []CertificatePair
	// ClientCAFile, when set, makes clients present a certificate that
	// this CA signed (mTLS).
	ClientCAFile string
	MinVersion   TLSVersion
	// HandshakeTimeout bounds a client's TLS handshake.
	HandshakeTimeout time.Duration

	// Pos is where the tls mapping is; ClientCAPos where client_ca_file's
	// value is.
	Pos, ClientCAPos Pos
}

// CertificatePair is a certificate chain and its private key, PEM files.
type CertificatePair struct {
	CertFile, KeyFile string
	// Field is the pair's path below the listener, for error messages:
	// "tls" for cert_file/key_file, "tls.certificates[1]" in a list.
	Field           string
	CertPos, KeyPos Pos
}

// Equal reports whether two TLS settings are the same, positions aside.
// Either may be nil (plaintext).
func (t *ListenerTLS) Equal(o *ListenerTLS) bool {
	if t == nil || o == nil {
		return t == o
	}
	if t.ClientCAFile != o.ClientCAFile || t.MinVersion != o.MinVersion ||
		t.HandshakeTimeout != o.HandshakeTimeout || len(t.Certificates) != len(o.Certificates) {
		return false
	}
	for i := range t.Certificates {
		a, b := t.Certificates[i], o.Certificates[i]
		if a.CertFile != b.CertFile || a.KeyFile != b.KeyFile {
			return false
		}
	}
	return true
}

// shift moves every position by d lines (see Parser).
func (t *ListenerTLS) shift(d int) *ListenerTLS {
	if t == nil {
		return nil
	}
	m := *t
	m.Pos, m.ClientCAPos = t.Pos.shift(d), t.ClientCAPos.shift(d)
	m.Certificates = make([]CertificatePair, len(t.Certificates))
	for i, c := range t.Certificates {
		c.CertPos, c.KeyPos = c.CertPos.shift(d), c.KeyPos.shift(d)
		m.Certificates[i] = c
	}
	return &m
}

// LBPolicy names a load-balancing policy.
type LBPolicy string

// Load-balancing policies.
const (
	RoundRobin   LBPolicy = "round_robin"
	LeastRequest LBPolicy = "least_request"
	Random       LBPolicy = "random"
	RingHash     LBPolicy = "ring_hash"
	Maglev       LBPolicy = "maglev"
	// WeightedRoundRobin weighs endpoints by their backends' load
	// reports (ORCA); see the load_reports section.
	WeightedRoundRobin LBPolicy = "weighted_round_robin"
)

// Hashes reports whether the policy places requests by a key's hash
// (ring_hash, maglev), configured by the hash section.
func (p LBPolicy) Hashes() bool { return p == RingHash || p == Maglev }

// Cluster is a pool of interchangeable endpoints.
type Cluster struct {
	Name     string
	LBPolicy LBPolicy
	// PanicThreshold is a percentage (0-100); 0 disables panic mode.
	PanicThreshold int
	Endpoints      []Endpoint
	// Discovery, when not nil, is where more endpoints come from: the
	// cluster balances over the union of Endpoints and what it finds.
	Discovery *discovery.Spec
	// HealthCheck is decoded straight into the checker's own type, whose
	// defaults and rules it takes.
	HealthCheck checker.Config
	// Outlier is the outlier_detection section (nil: off).
	Outlier *outlier.Config
	// SlowStart is the slow_start section (nil: off).
	SlowStart *slowstart.Config
	// Hash is the hash section of a ring_hash or maglev cluster, with its
	// defaults when the section is absent; nil for the other policies.
	Hash *Hash
	// TLS makes traffic and health checks reach the endpoints over TLS
	// (nil: plaintext, h2c for gRPC).
	TLS *ClusterTLS
	// LoadReports is the load_reports section: set (defaults filled in)
	// exactly when LBPolicy is weighted_round_robin.
	LoadReports *wrr.Config

	Pos Pos
}

// Hash is how a ring_hash or maglev cluster hashes its requests.
type Hash struct {
	// Header is the gRPC metadata key grpc listeners hash, lower case; ""
	// only for a cluster no grpc listener uses.
	Header string
	// RingSize is the number of points on the ring (ring_hash; 0 for
	// maglev).
	RingSize int

	// Pos is where a missing header is reported: the hash section, or the
	// lb_policy without one; the zero Pos when there is a header (valid or
	// not) or the section was reported already.
	Pos Pos
}

// ClusterTLS configures the TLS vigil speaks to a cluster's endpoints, for
// traffic and health checks alike. File paths are as written;
// Config.FilePath resolves them.
type ClusterTLS struct {
	// CAFile verifies the endpoints' certificates; "" is the system roots.
	CAFile string
	// CertFile and KeyFile, both or neither, are the client certificate
	// presented to endpoints that ask for one (mTLS).
	CertFile, KeyFile string
	// ServerName is sent as SNI and verified against the endpoint's
	// certificate; "" is each endpoint's own host (an IP address is
	// verified as an IP SAN, and sent as no SNI).
	ServerName string
	// InsecureSkipVerify accepts any certificate: encryption without
	// authentication.
	InsecureSkipVerify bool

	// Pos is where the tls mapping is; the others where each file's value is.
	Pos, CAPos, CertPos, KeyPos Pos
}

// Equal reports whether two cluster TLS settings are the same, positions
// aside. Either may be nil (plaintext).
func (t *ClusterTLS) Equal(o *ClusterTLS) bool {
	if t == nil || o == nil {
		return t == o
	}
	return t.CAFile == o.CAFile && t.CertFile == o.CertFile && t.KeyFile == o.KeyFile &&
		t.ServerName == o.ServerName && t.InsecureSkipVerify == o.InsecureSkipVerify
}

// shift moves every position by d lines (see Parser).
func (t *ClusterTLS) shift(d int) *ClusterTLS {
	if t == nil {
		return nil
	}
	m := *t
	m.Pos, m.CAPos, m.CertPos, m.KeyPos = t.Pos.shift(d), t.CAPos.shift(d), t.CertPos.shift(d), t.KeyPos.shift(d)
	return &m
}

// Endpoint is one backend address in a cluster.
type Endpoint struct {
	Address string
	Weight  uint32

	Pos Pos
}

// Pos is a position in the configuration file.
type Pos struct {
	Line, Col int
}

// Attrs summarizes the configuration for the `config loaded` log record:
// file, listeners, clusters, endpoints.
func (c *Config) Attrs() []slog.Attr {
	endpoints := 0
	for i := range c.Clusters {
		endpoints += len(c.Clusters[i].Endpoints)
	}
	return []slog.Attr{
		slog.String("file", c.File),
		slog.Int("listeners", len(c.Listeners)),
		slog.Int("clusters", len(c.Clusters)),
		slog.Int("endpoints", endpoints),
	}
}

// Same reports whether l and o are the same listener, wherever they are in
// the file.
func (l Listener) Same(o Listener) bool {
	return l.Name == o.Name && l.Cluster == o.Cluster && l.SameSettings(o) &&
		l.TLS.Equal(o.TLS) && sameRoutes(l.Routes, o.Routes) && l.AccessLog.Same(o.AccessLog)
}

// SameSettings reports whether l and o listen and serve alike: the same
// address, protocol and limits; their names, clusters, routes and TLS
// aside. (A test keeps it up to date with the fields of Listener.)
func (l Listener) SameSettings(o Listener) bool {
	return l.Address == o.Address && l.Protocol == o.Protocol &&
		l.MaxConcurrentStreams == o.MaxConcurrentStreams && l.MaxMessageSize == o.MaxMessageSize &&
		l.IdleTimeout == o.IdleTimeout && l.MaxConnections == o.MaxConnections
}

// SameRoutes reports whether l and o have the same routes, positions
// aside.
func (l Listener) SameRoutes(o Listener) bool { return sameRoutes(l.Routes, o.Routes) }
