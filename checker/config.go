package checker

import (
	"crypto/tls"
	"time"

	"github.com/vigil-proxy/vigil/internal/fielderr"
)

// Mode is how endpoints are health-checked.
type Mode string

// Health-check modes.
const (
	// ModeCheck polls grpc.health.v1.Health/Check every interval.
	ModeCheck Mode = "check"
	// ModeWatch keeps one grpc.health.v1.Health/Watch stream open per
	// endpoint; every status pushed on it takes effect at once.
	ModeWatch Mode = "watch"
	// ModeTCP counts a TCP connect within the timeout as a success.
	ModeTCP Mode = "tcp"
	// ModeNone admits every endpoint at once and never probes it.
	ModeNone Mode = "none"
)

// Modes lists the modes, in the order error messages name them.
var Modes = []Mode{ModeCheck, ModeWatch, ModeTCP, ModeNone}

// OnUnimplemented is what an UNIMPLEMENTED answer to a health RPC (no
// health service registered on the backend) means.
type OnUnimplemented string

// Policies for UNIMPLEMENTED.
const (
	// UnimplementedEvict evicts the endpoint with reason UNIMPLEMENTED.
	UnimplementedEvict OnUnimplemented = "evict"
	// UnimplementedServe treats the endpoint as healthy, with a warning
	// logged once per endpoint.
	UnimplementedServe OnUnimplemented = "serve"
)

// OnUnimplementeds lists the policies, in the order error messages name
// them.
var OnUnimplementeds = []OnUnimplemented{UnimplementedEvict, UnimplementedServe}

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

// Livenesses lists the mechanisms, in the order error messages name them.
var Livenesses = []Liveness{LivenessKeepalive, LivenessCheck}

// The defaults: what DefaultConfig returns, and what a zero field of a
// Config given to NewGroup or Reconfigure means. vigil's configuration
// takes them from here.
const (
	DefaultMode               = ModeCheck
	DefaultInterval           = 5 * time.Second
	DefaultTimeout            = time.Second
	DefaultJitter             = 0.10
	DefaultUnhealthyThreshold = 3
	DefaultHealthyThreshold   = 2
	DefaultOnUnimplemented    = UnimplementedEvict
	DefaultLiveness           = LivenessKeepalive
)

// Config is the health-check configuration of one group of endpoints, as
// vigil's configuration file spells it under health_check.
type Config struct {
	// Mode is the kind of probe.
	Mode Mode
	// Service is the gRPC health service name asked about; "" is the whole
	// server.
	Service string
	// Interval is the time between two probes of one endpoint (check, tcp),
	// the period of the liveness check of an open Watch stream, and the cap
	// of the Watch re-open backoff.
	Interval time.Duration
	// Timeout bounds one probe. It may be longer than Interval: probes of
	// one endpoint never overlap, the next one starts an interval after
	// the previous one ended.
	Timeout time.Duration
	// Jitter spreads each interval by +/- this fraction of it (0.1 = 10%),
	// so that probers started together drift apart; at least 0 and less
	// than 1. Zero is no jitter (DefaultConfig has DefaultJitter).
	Jitter float64
	// Thresholds drive the state machine.
	Thresholds Thresholds
	// OnUnimplemented is what an UNIMPLEMENTED health RPC means.
	OnUnimplemented OnUnimplemented
	// Liveness is how a quiet Watch stream's connection is proven alive:
	// with LivenessCheck a Watch stream that has been quiet for an
	// interval sends a Check on its connection; with LivenessKeepalive
	// the connection's liveness is left to TCP keepalive with a user
	// timeout, which costs the process nothing but cannot see past a
	// userspace proxy that keeps the TCP connection up (see watch.go).
	Liveness Liveness
	// TLS, when not nil, makes every probe reach its endpoint over TLS
	// (Envoy's rule: probes use the cluster's transport): Check and Watch
	// over HTTP/2 with ALPN h2, and a tcp probe is a TCP connect and a
	// completed handshake. It is not in vigil's health_check section:
	// vigil sets it from the cluster's tls. A change of it replaces the
	// probe connections.
	TLS TLS
}

// TLS gives probe connections their TLS configuration. vigil's is
// internal/tlsconf's Client, whose files reload as they change; its
// dynamic type must be comparable (a pointer), as Configs are compared.
type TLS interface {
	// ClientConfig is the configuration of a new connection to address;
	// h2 asks for ALPN h2. It is called at every dial, and its result is
	// not modified.
	ClientConfig(address string, h2 bool) *tls.Config
}

// DefaultConfig returns the default health-check configuration.
func DefaultConfig() Config {
	return Config{
		Mode:            DefaultMode,
		Interval:        DefaultInterval,
		Timeout:         DefaultTimeout,
		Jitter:          DefaultJitter,
		Thresholds:      Thresholds{Unhealthy: DefaultUnhealthyThreshold, Healthy: DefaultHealthyThreshold},
		OnUnimplemented: DefaultOnUnimplemented,
		Liveness:        DefaultLiveness,
	}
}

// FieldError is what is wrong with one field of a Config (the one type
// every section's validator reports in).
type FieldError = fielderr.Error

// Validate reports what is wrong with c (Problems, joined), or nil.
func (c Config) Validate() error { return fielderr.List(c.Problems()).Join() }

// Problems lists what is wrong with c, a field at a time. A zero field is
// fine: it takes its default.
func (c Config) Problems() []*FieldError {
	var errs fielderr.List
	bad := errs.Add
	switch c.Mode {
	case "", ModeCheck, ModeWatch, ModeTCP, ModeNone:
	default:
		bad("mode", "must be one of check, watch, tcp, none, not %q", c.Mode)
	}
	if c.Interval < 0 {
		bad("interval", "must not be negative, not %v", c.Interval)
	}
	if c.Timeout < 0 {
		bad("timeout", "must not be negative, not %v", c.Timeout)
	}
	if c.Jitter < 0 || c.Jitter >= 1 {
		bad("jitter", "must be at least 0%% and less than 100%%, not %g%%", c.Jitter*100)
	}
	if c.Thresholds.Unhealthy < 0 {
		bad("unhealthy_threshold", "must be at least 1, not %d", c.Thresholds.Unhealthy)
	}
	if c.Thresholds.Healthy < 0 {
		bad("healthy_threshold", "must be at least 1, not %d", c.Thresholds.Healthy)
	}
	switch c.OnUnimplemented {
	case "", UnimplementedEvict, UnimplementedServe:
	default:
		bad("on_unimplemented", "must be one of evict, serve, not %q", c.OnUnimplemented)
	}
	switch c.Liveness {
	case "", LivenessKeepalive, LivenessCheck:
	default:
		bad("liveness", "must be one of keepalive, check, not %q", c.Liveness)
	}
	return errs
}

// withDefaults returns c with every zero field but Jitter replaced by its
// default.
func (c Config) withDefaults() Config {
	if c.Mode == "" {
		c.Mode = DefaultMode
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Thresholds.Unhealthy == 0 {
		c.Thresholds.Unhealthy = DefaultUnhealthyThreshold
	}
	if c.Thresholds.Healthy == 0 {
		c.Thresholds.Healthy = DefaultHealthyThreshold
	}
	if c.OnUnimplemented == "" {
		c.OnUnimplemented = DefaultOnUnimplemented
	}
	if c.Liveness == "" {
		c.Liveness = DefaultLiveness
	}
	return c
}

// usable returns c with its defaults, or, if c is invalid, the defaults
// for every invalid field, so that probers never see a nonsensical value.
func (c Config) usable() Config {
	c = c.withDefaults()
	for _, fe := range c.Problems() {
		d := DefaultConfig()
		switch fe.Field {
		case "mode":
			c.Mode = d.Mode
		case "interval":
			c.Interval = d.Interval
		case "timeout":
			c.Timeout = d.Timeout
		case "jitter":
			c.Jitter = d.Jitter
		case "unhealthy_threshold":
			c.Thresholds.Unhealthy = d.Thresholds.Unhealthy
		case "healthy_threshold":
			c.Thresholds.Healthy = d.Thresholds.Healthy
		case "on_unimplemented":
			c.OnUnimplemented = d.OnUnimplemented
		case "liveness":
			c.Liveness = d.Liveness
		}
	}
	return c
}

// probersDiffer reports whether going from a to b needs the probers
// restarted: anything but the thresholds changed. The state machine reads
// the thresholds of the group in force, so a change of them alone takes
// effect at the next result, with no probe connection or Watch stream
// touched.
func probersDiffer(a, b Config) bool {
	a.Thresholds, b.Thresholds = Thresholds{}, Thresholds{}
	return a != b
}
