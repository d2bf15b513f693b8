package checker

import (
	"errors"
	"fmt"
	"time"
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

// Defaults applied by NewGroup and Reconfigure to zero fields of a Config.
// They match vigil's configuration defaults.
const (
	DefaultInterval           = 5 * time.Second
	DefaultTimeout            = time.Second
	DefaultUnhealthyThreshold = 3
	DefaultHealthyThreshold   = 2
)

// Config is the health-check configuration of one group of endpoints.
type Config struct {
	// Mode is the kind of probe; "" means ModeCheck.
	Mode Mode
	// Service is the gRPC health service name asked about; "" is the whole
	// server.
	Service string
	// Interval is the time between two probes of one endpoint (check, tcp),
	// the period of the liveness check of an open Watch stream, and the cap
	// of the Watch re-open backoff. Zero means DefaultInterval.
	Interval time.Duration
	// Timeout bounds one probe. Zero means DefaultTimeout.
	Timeout time.Duration
	// Jitter spreads each interval by +/- this fraction of it (0.1 = 10%),
	// so that probers started together drift apart. It is clamped to [0, 1].
	Jitter float64
	// Thresholds drive the state machine; zero fields mean
	// DefaultUnhealthyThreshold and DefaultHealthyThreshold.
	Thresholds Thresholds
	// ServeUnimplemented treats an endpoint whose health RPC is
	// UNIMPLEMENTED (no health service registered) as healthy, logging a
	// warning once per endpoint (on_unimplemented: serve). When false such an
	// endpoint is evicted with reason UNIMPLEMENTED.
	ServeUnimplemented bool
	// LivenessCheck makes a Watch stream that has been quiet for an
	// interval send a Check on its connection (liveness: check). Without
	// it the connection's liveness is left to TCP keepalive with a user
	// timeout, which costs the process nothing but cannot see past a
	// userspace proxy that keeps the TCP connection up (see watch.go).
	LivenessCheck bool
}

// Validate reports what is wrong with c, if anything. Zero fields are fine:
// they take the defaults.
func (c Config) Validate() error {
	var errs []error
	switch c.Mode {
	case "", ModeCheck, ModeWatch, ModeTCP, ModeNone:
	default:
		errs = append(errs, fmt.Errorf("mode %q: want check, watch, tcp or none", c.Mode))
	}
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("interval %v: must not be negative", c.Interval))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %v: must not be negative", c.Timeout))
	}
	if c.Jitter < 0 || c.Jitter > 1 {
		errs = append(errs, fmt.Errorf("jitter %v: want a fraction between 0 and 1", c.Jitter))
	}
	if c.Thresholds.Unhealthy < 0 || c.Thresholds.Healthy < 0 {
		errs = append(errs, fmt.Errorf("thresholds %+v: must not be negative", c.Thresholds))
	}
	return errors.Join(errs...)
}

// withDefaults returns c with every zero or out-of-range field replaced by
// its default, so that the probers never see a nonsensical value.
func (c Config) withDefaults() Config {
	switch c.Mode {
	case ModeCheck, ModeWatch, ModeTCP, ModeNone:
	default:
		c.Mode = ModeCheck
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	c.Jitter = min(max(c.Jitter, 0), 1)
	if c.Thresholds.Unhealthy <= 0 {
		c.Thresholds.Unhealthy = DefaultUnhealthyThreshold
	}
	if c.Thresholds.Healthy <= 0 {
		c.Thresholds.Healthy = DefaultHealthyThreshold
	}
	return c
}
