// Package outlier is passive outlier detection's arithmetic: the
// configuration (a cluster's outlier_detection section), and pure
// functions of an endpoint's ejection state and the time, which the pool
// (balancer/pool) applies under its lock. Nothing here keeps time or runs
// a goroutine: every function takes now.
//
// An ejection is one more reason an endpoint may not be picked, next to
// its active health check: the pool owns both and reports an ejection as
// an eviction. What counts as a failure is balancer.Classify; the data
// paths report outcomes through balancer.Endpoint.Report.
package outlier

import (
	"time"

	"github.com/vigil-proxy/vigil/internal/fielderr"
)

// Defaults of the outlier_detection section (DESIGN.md, "Traffic-aware
// health"), Envoy's where Envoy has one.
const (
	DefaultConsecutiveFailures = 5
	DefaultInterval            = 10 * time.Second
	DefaultBaseEjectionTime    = 30 * time.Second
	DefaultMaxEjectionTime     = 300 * time.Second
	DefaultMaxEjectionPercent  = 10
	DefaultFailurePercentage   = 0
	DefaultMinimumRequests     = 50
)

// Config is a cluster's outlier_detection section. The zero value of a
// field is not its default: use DefaultConfig and override.
type Config struct {
	// ConsecutiveFailures ejects an endpoint at once when that many RPCs
	// (or connections) in a row failed; 0 turns the rule off.
	ConsecutiveFailures int
	// Interval is how often failure rates are computed and ejection
	// multipliers stepped down.
	Interval time.Duration
	// BaseEjectionTime: the n-th ejection in a row lasts n x this, at
	// most MaxEjectionTime.
	BaseEjectionTime, MaxEjectionTime time.Duration
	// MaxEjectionPercent bounds the share of the cluster ejected at once;
	// one endpoint may always be ejected.
	MaxEjectionPercent int
	// FailurePercentage (1-100) also ejects an endpoint whose failed share
	// of RPCs over an interval exceeds it; 0 turns the rule off.
	FailurePercentage int
	// MinimumRequests is how many RPCs an endpoint needs in an interval
	// for FailurePercentage to judge it.
	MinimumRequests int
}

// DefaultConfig returns the defaults of every field.
func DefaultConfig() Config {
	return Config{
		ConsecutiveFailures: DefaultConsecutiveFailures,
		Interval:            DefaultInterval,
		BaseEjectionTime:    DefaultBaseEjectionTime,
		MaxEjectionTime:     DefaultMaxEjectionTime,
		MaxEjectionPercent:  DefaultMaxEjectionPercent,
		FailurePercentage:   DefaultFailurePercentage,
		MinimumRequests:     DefaultMinimumRequests,
	}
}

// MinInterval is the shortest interval (and base ejection time) taken.
const MinInterval = 10 * time.Millisecond

// FieldError is what is wrong with one field of a Config (the one type
// every section's validator reports in).
type FieldError = fielderr.Error

// Validate reports what is wrong with c (Problems, joined), or nil.
func (c Config) Validate() error { return fielderr.List(c.Problems()).Join() }

// Problems lists what is wrong with c, a field at a time.
func (c Config) Problems() []*FieldError {
	var errs fielderr.List
	bad := errs.Add
	if c.ConsecutiveFailures < 0 {
		bad("consecutive_failures", "must be 0 (off) or more, not %d", c.ConsecutiveFailures)
	}
	if c.Interval < MinInterval {
		bad("interval", "must be at least %v, not %v", MinInterval, c.Interval)
	}
	if c.BaseEjectionTime < MinInterval {
		bad("base_ejection_time", "must be at least %v, not %v", MinInterval, c.BaseEjectionTime)
	}
	if c.MaxEjectionTime < c.BaseEjectionTime {
		bad("max_ejection_time", "must be at least base_ejection_time (%v), not %v", c.BaseEjectionTime, c.MaxEjectionTime)
	}
	if c.MaxEjectionPercent < 0 || c.MaxEjectionPercent > 100 {
		bad("max_ejection_percent", "must be 0-100, not %d", c.MaxEjectionPercent)
	}
	if c.FailurePercentage < 0 || c.FailurePercentage > 100 {
		bad("failure_percentage", "must be 0 (off) or 1-100, not %d", c.FailurePercentage)
	}
	if c.MinimumRequests < 1 {
		bad("minimum_requests", "must be at least 1, not %d", c.MinimumRequests)
	}
	if c.ConsecutiveFailures == 0 && c.FailurePercentage == 0 {
		bad("consecutive_failures", "and failure_percentage are both 0: nothing would ever be ejected (leave outlier_detection out to turn it off)")
	}
	return errs
}

// EjectionTime is how long the n-th ejection in a row lasts (n >= 1):
// n x BaseEjectionTime, at most MaxEjectionTime.
func (c Config) EjectionTime(n int) time.Duration {
	n = max(n, 1)
	if limit := c.MaxEjectionTime; c.BaseEjectionTime > 0 && time.Duration(n) > limit/c.BaseEjectionTime {
		return max(limit, c.BaseEjectionTime)
	}
	return time.Duration(n) * c.BaseEjectionTime
}

// MaxEjected is how many of total endpoints may be ejected at once with
// percent: percent of total rounded down, but at least one (a small
// cluster would otherwise never eject anything: Envoy's envoy#3263).
func MaxEjected(total, percent int) int {
	if total <= 0 {
		return 0
	}
	return max(total*percent/100, 1)
}

// MayEject reports whether one more endpoint may be ejected while ejected
// of total already are.
func (c Config) MayEject(total, ejected int) bool {
	return ejected < MaxEjected(total, c.MaxEjectionPercent)
}

// FailureRateExceeded reports whether an interval's outcomes eject by
// failure_percentage: the rule is on, the endpoint had at least
// MinimumRequests, and more than FailurePercentage of them failed.
func (c Config) FailureRateExceeded(successes, failures uint64) bool {
	n := successes + failures
	if c.FailurePercentage <= 0 || n == 0 || n < uint64(max(c.MinimumRequests, 1)) {
		return false
	}
	return failures*100 > uint64(c.FailurePercentage)*n
}

// Rule is what ejected an endpoint.
type Rule uint8

// Rules.
const (
	RuleNone Rule = iota
	// RuleConsecutive: consecutive_failures failures in a row.
	RuleConsecutive
	// RuleFailurePercentage: failure_percentage over an interval.
	RuleFailurePercentage
)

var ruleNames = [...]string{"", "consecutive_failures", "failure_percentage"}

// String is the rule's name in the configuration ("" for RuleNone).
func (r Rule) String() string {
	if int(r) < len(ruleNames) {
		return ruleNames[r]
	}
	return "unknown"
}

// State is one endpoint's ejection state. The zero value is an endpoint
// never ejected.
type State struct {
	// Ejected: the endpoint is out until Until.
	Ejected bool
	// Since and Until bound the current (or last) ejection.
	Since, Until time.Time
	// Multiplier counts the ejections in a row: the next one lasts
	// Multiplier+1 base ejection times. Intervals without failures step
	// it down.
	Multiplier int
	// Rule, Reason (the last failure's code name) and Failures (the
	// failures that made the rule trip) describe the current or last
	// ejection.
	Rule     Rule
	Reason   string
	Failures int
}

// Eject is s ejected at now by rule after failures ending with reason.
func (s State) Eject(c Config, now time.Time, rule Rule, reason string, failures int) State {
	s.Multiplier++
	s.Ejected = true
	s.Since, s.Until = now, now.Add(c.EjectionTime(s.Multiplier))
	s.Rule, s.Reason, s.Failures = rule, reason, failures
	return s
}

// Expired reports whether s is an ejection whose time is over at now.
func (s State) Expired(now time.Time) bool { return s.Ejected && !now.Before(s.Until) }

// End is s once its ejection ends (the multiplier stays: see Review).
func (s State) End() State {
	s.Ejected = false
	return s
}

// Review is s after an interval in which the endpoint had failures
// failed RPCs: an endpoint that is not ejected and did not fail steps its
// multiplier down by one, so that an endpoint that stays well is soon
// back to base ejection times.
func (s State) Review(failures uint64) State {
	if !s.Ejected && failures == 0 && s.Multiplier > 0 {
		s.Multiplier--
	}
	return s
}
