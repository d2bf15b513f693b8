// Package slowstart is slow start's arithmetic: the configuration (a
// cluster's slow_start section) and the weight an endpoint gets while it
// ramps up after being admitted or readmitted, as pure functions of the
// time since then. The pool (balancer/pool) keeps the admission times and
// rebuilds the picker with these weights; nothing here keeps time.
//
// The formula is Envoy's: effective weight = weight x max(min_weight_percent/100,
// (t/window)^(1/aggression)), and the full weight from t = window on.
package slowstart

import (
	"math"
	"time"

	"github.com/vigil-proxy/vigil/internal/fielderr"
)

// Defaults of the slow_start section (DESIGN.md, "Traffic-aware health"),
// Envoy's where Envoy has one.
const (
	DefaultWindow           = 30 * time.Second
	DefaultAggression       = 1.0
	DefaultMinWeightPercent = 10
)

// MinStep is the shortest time between two rebuilds of a ramping
// cluster's picker: a rebuild costs O(endpoints), and a ramp finer than
// this would buy nothing a client could see.
const MinStep = 100 * time.Millisecond

// Config is a cluster's slow_start section. The zero value of a field is
// not its default: use DefaultConfig and override.
type Config struct {
	// Window is how long an admitted or readmitted endpoint ramps up.
	Window time.Duration
	// Aggression shapes the ramp: 1 is linear, above 1 rises faster
	// early, below 1 slower.
	Aggression float64
	// MinWeightPercent (0-100) is the share of its weight an endpoint
	// gets at least while it ramps.
	MinWeightPercent int
}

// DefaultConfig returns the defaults of every field.
func DefaultConfig() Config {
	return Config{Window: DefaultWindow, Aggression: DefaultAggression, MinWeightPercent: DefaultMinWeightPercent}
}

// FieldError is what is wrong with one field of a Config (the one type
// every section's validator reports in).
type FieldError = fielderr.Error

// Validate reports what is wrong with c (Problems, joined), or nil.
func (c Config) Validate() error { return fielderr.List(c.Problems()).Join() }

// Problems lists what is wrong with c, a field at a time.
func (c Config) Problems() []*FieldError {
	var errs fielderr.List
	bad := errs.Add
	if c.Window <= 0 {
		bad("window", "must be positive, not %v", c.Window)
	}
	// NaN fails both comparisons the wrong way: test for what is valid.
	if !(c.Aggression > 0) || math.IsInf(c.Aggression, 0) {
		bad("aggression", "must be a positive number, not %v", c.Aggression)
	}
	if c.MinWeightPercent < 0 || c.MinWeightPercent > 100 {
		bad("min_weight_percent", "must be from 0 to 100, not %d", c.MinWeightPercent)
	}
	return errs
}

// Factor is the share of its weight (0-1] an endpoint admitted elapsed
// ago gets: max(min_weight_percent/100, (elapsed/window)^(1/aggression)),
// and 1 once the window is over. A negative elapsed (a clock stepped
// back) counts as 0.
func (c Config) Factor(elapsed time.Duration) float64 {
	if elapsed >= c.Window || c.Window <= 0 {
		return 1
	}
	t := max(float64(elapsed), 0) / float64(c.Window)
	f := t
	if c.Aggression != 1 {
		f = math.Pow(t, 1/c.Aggression)
	}
	return min(max(f, float64(c.MinWeightPercent)/100), 1)
}

// Weight is weight x Factor(elapsed).
func (c Config) Weight(weight uint32, elapsed time.Duration) float64 {
	return float64(weight) * c.Factor(elapsed)
}

// Ramping reports whether an endpoint admitted elapsed ago still ramps.
func (c Config) Ramping(elapsed time.Duration) bool { return elapsed < c.Window }

// Step is how often a ramping cluster's picker is rebuilt: a tenth of the
// window, and at least MinStep apart.
func (c Config) Step() time.Duration { return max(c.Window/10, MinStep) }

// Scale is the factor by which every weight of a cluster is multiplied
// while one of its endpoints ramps, so that the pickers' integer weights
// resolve a hundredth of a weight (a ramping endpoint of weight 1 goes
// 10, 11, ... 100 against its peers' 100). Weights are at most 10,000,
// so a scaled one still fits in 32 bits.
const Scale = 100

// PickerWeight is the integer weight a picker is built with for an
// endpoint of weight with factor f, in a cluster some of whose endpoints
// ramp: weight x Scale x f, rounded, at least 1.
func PickerWeight(weight uint32, f float64) uint32 {
	w := math.Round(float64(weight) * Scale * f)
	if w < 1 {
		return 1
	}
	if w > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(w)
}
