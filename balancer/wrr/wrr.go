// Package wrr is the weighted_round_robin policy's arithmetic (gRFC A58):
// the load_reports configuration, an endpoint's weight from the load
// reports its backend sends (ORCA, gRFC A51), the blackout and expiration
// of a weight, the mean for endpoints without one, and the integer weights
// a picker is built with. The pool (balancer/pool) keeps each endpoint's
// State, feeds it the reports the checker receives, and rebuilds the
// picker with Weights at most once per UpdatePeriod; nothing here keeps
// time or runs a goroutine.
//
// The picker itself is round_robin's (balancer/roundrobin): an exact,
// smooth weighted round robin whose picks neither lock nor allocate. Its
// weights are fixed at build, as grpc-go's scheduler is: a weight change
// is a new picker, never a write the data path sees.
//
// Importing the package registers the policy under the name
// "weighted_round_robin".
package wrr

import (
	"math"
	"time"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/roundrobin"
	"github.com/vigil-proxy/vigil/internal/fielderr"
)

// Name is the policy's name in the configuration (lb_policy).
const Name = "weighted_round_robin"

func init() { balancer.Register(Policy{}) }

// Policy is the weighted_round_robin policy. Its pickers are round
// robin's over the weights the pool computes from load reports; the
// pool recognizes the policy by its type.
type Policy struct{}

// Name returns "weighted_round_robin".
func (Policy) Name() string { return Name }

// Build returns a weighted round-robin picker over endpoints.
func (Policy) Build(endpoints []balancer.Weighted) balancer.Picker {
	return roundrobin.Policy{}.Build(endpoints)
}

// Defaults of the load_reports section (DESIGN.md, "Load-aware and
// affinity balancing"), grpc-go's.
const (
	DefaultPeriod       = 10 * time.Second
	DefaultBlackout     = 10 * time.Second
	DefaultExpiration   = 3 * time.Minute
	DefaultErrorPenalty = 1.0
)

// MinPeriod is the shortest report interval vigil asks for: a backend
// sending reports faster would cost more than the weights gain.
const MinPeriod = 100 * time.Millisecond

// UpdatePeriod is how often the weights reach the picker, at most: the
// pool rebuilds a weighted_round_robin cluster's picker this often, as
// grpc-go's weight_update_period (default 1 s).
const UpdatePeriod = time.Second

// MaxPickerWeight is the integer weight the heaviest endpoint gets in a
// picker; the others are scaled to it (at least 1). It is the
// configuration's largest weight, so a picker of load weights costs what a
// picker of configured weights does.
const MaxPickerWeight = 10000

// Config is a cluster's load_reports section. The zero value of a field
// is not its default: use DefaultConfig and override.
type Config struct {
	// Period is the report interval asked of each backend.
	Period time.Duration
	// Blackout: a weight is used only once reports have come this long
	// (since the first non-empty one); 0 uses it at once.
	Blackout time.Duration
	// Expiration: a weight with no report this long is dropped (and its
	// blackout starts again with the next report).
	Expiration time.Duration
	// ErrorPenalty multiplies the error rate (eps/qps) added to the
	// utilization.
	ErrorPenalty float64
}

// DefaultConfig returns the defaults of every field.
func DefaultConfig() Config {
	return Config{Period: DefaultPeriod, Blackout: DefaultBlackout, Expiration: DefaultExpiration, ErrorPenalty: DefaultErrorPenalty}
}

// FieldError is what is wrong with one field of a Config.
type FieldError = fielderr.Error

// Validate reports what is wrong with c (Problems, joined), or nil.
func (c Config) Validate() error { return fielderr.List(c.Problems()).Join() }

// Problems lists what is wrong with c, a field at a time.
func (c Config) Problems() []*FieldError {
	var errs fielderr.List
	if c.Period < MinPeriod {
		errs.Add("period", "must be at least %v, not %v", MinPeriod, c.Period)
	}
	if c.Blackout < 0 {
		errs.Add("blackout", "must not be negative, not %v", c.Blackout)
	}
	if c.Expiration <= 0 {
		errs.Add("expiration", "must be positive, not %v", c.Expiration)
	}
	// NaN fails every comparison: test for what is valid.
	if !(c.ErrorPenalty >= 0) || math.IsInf(c.ErrorPenalty, 0) {
		errs.Add("error_penalty", "must be a number from 0 up, not %v", c.ErrorPenalty)
	}
	return errs
}

// Report is the part of an ORCA load report (xds.data.orca.v3.OrcaLoadReport)
// the weights use.
type Report struct {
	CPUUtilization         float64
	ApplicationUtilization float64
	// QPS and EPS are the backend's queries and errors per second
	// (rps_fractional, eps).
	QPS, EPS float64
}

// Utilization is the report's application_utilization, else its
// cpu_utilization.
func (r Report) Utilization() float64 {
	if r.ApplicationUtilization > 0 {
		return r.ApplicationUtilization
	}
	return r.CPUUtilization
}

// Weight is the report's weight, qps / (utilization + eps/qps x
// penalty), and whether it has one: a report with no qps or no
// utilization has none (gRFC A58 ignores it), nor has one with a value
// that is not a finite number.
func (r Report) Weight(penalty float64) (float64, bool) {
	u, qps := r.Utilization(), r.QPS
	if !(u > 0) || !(qps > 0) || math.IsInf(u, 0) || math.IsInf(qps, 0) {
		return 0, false
	}
	eps := r.EPS
	if !(eps >= 0) || math.IsInf(eps, 0) {
		eps = 0
	}
	w := qps / (u + eps/qps*penalty)
	if !(w > 0) || math.IsInf(w, 0) {
		return 0, false
	}
	return w, true
}

// State is one endpoint's weight as its reports make it. The zero value
// has no report. It is not safe for concurrent use: its owner (the pool)
// guards it.
type State struct {
	// Last is the latest report received, At when (zero: none yet).
	Last Report
	At   time.Time

	weight        float64
	nonEmptySince time.Time // first report with a weight since the weight was last dropped
	lastUpdated   time.Time // latest report with a weight
}

// Report records a report received at now. A report without a weight
// (no qps or no utilization) is kept as Last but changes no weight.
func (s *State) Report(r Report, now time.Time, penalty float64) {
	s.Last, s.At = r, now
	w, ok := r.Weight(penalty)
	if !ok {
		return
	}
	s.weight, s.lastUpdated = w, now
	if s.nonEmptySince.IsZero() {
		s.nonEmptySince = now
	}
}

// Weight is the weight to use at now, or 0 when there is none: no report
// with a weight yet, none for c.Expiration (the weight is dropped and its
// blackout starts again), or the first came less than c.Blackout ago.
func (s *State) Weight(now time.Time, c Config) float64 {
	if s.lastUpdated.IsZero() {
		return 0
	}
	if c.Expiration > 0 && now.Sub(s.lastUpdated) >= c.Expiration {
		s.nonEmptySince = time.Time{}
		return 0
	}
	if s.nonEmptySince.IsZero() || (c.Blackout > 0 && now.Sub(s.nonEmptySince) < c.Blackout) {
		return 0
	}
	return s.weight
}

// Restart makes the blackout start again with the next report, as gRFC
// A58 does when a subchannel becomes READY: an endpoint readmitted after
// an eviction is weighed on fresh reports only.
func (s *State) Restart() { s.nonEmptySince = time.Time{} }

// Weights turns the weights of a picker's endpoints (0 where an endpoint
// has none) into the ones to build with, in place: an endpoint without a
// weight gets the mean of those with one. With fewer than two weighted
// endpoints every weight becomes 1 (round robin), and Weights returns
// false.
func Weights(ws []float64) (weighted bool) {
	n, sum := 0, 0.0
	for _, w := range ws {
		if w > 0 {
			n++
			sum += w
		}
	}
	if n < 2 {
		for i := range ws {
			ws[i] = 1
		}
		return false
	}
	mean := sum / float64(n)
	for i, w := range ws {
		if !(w > 0) {
			ws[i] = mean
		}
	}
	return true
}

// PickerWeight is the integer weight for w in a picker whose heaviest
// weight is heaviest: w scaled so that heaviest is MaxPickerWeight,
// rounded, at least 1.
func PickerWeight(w, heaviest float64) uint32 {
	if !(heaviest > 0) || !(w > 0) {
		return 1
	}
	x := math.Round(w / heaviest * MaxPickerWeight)
	if x < 1 {
		return 1
	}
	if x > MaxPickerWeight {
		return MaxPickerWeight
	}
	return uint32(x)
}
