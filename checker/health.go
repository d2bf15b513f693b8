package checker

import (
	"fmt"
	"time"
)

// Health is where an endpoint stands in the health state machine.
type Health uint8

// Endpoint health states.
const (
	// Pending is a new endpoint that has not been probed successfully yet;
	// it takes no traffic.
	Pending Health = iota
	// Healthy endpoints take traffic.
	Healthy
	// Unhealthy endpoints were evicted and take no traffic (but see
	// CauseTransport and panic mode).
	Unhealthy
	// Draining endpoints were removed from the configuration: no probes, no
	// new traffic, in-flight work finishes.
	Draining
)

var healthNames = [...]string{"pending", "healthy", "unhealthy", "draining"}

func (h Health) String() string {
	if int(h) < len(healthNames) {
		return healthNames[h]
	}
	return fmt.Sprintf("health(%d)", uint8(h))
}

// Cause says who decided that a probe failed.
type Cause uint8

// Failure causes.
const (
	// CauseNone: the probe did not fail.
	CauseNone Cause = iota
	// CauseAnswer: the backend answered and said it cannot serve
	// (NOT_SERVING, UNKNOWN, a non-OK status such as NOT_FOUND, ...). Such an
	// answer is authoritative: it evicts at once and never gets panic traffic.
	CauseAnswer
	// CauseTransport: the backend could not be asked (timeout, refused,
	// reset, unavailable). Counted toward the unhealthy threshold; eligible
	// for panic traffic, since the probe path itself may be what is broken.
	CauseTransport
)

var causeNames = [...]string{"none", "answer", "transport"}

func (c Cause) String() string {
	if int(c) < len(causeNames) {
		return causeNames[c]
	}
	return fmt.Sprintf("cause(%d)", uint8(c))
}

// Result is the outcome of one probe, or one status pushed on a Watch stream.
type Result struct {
	// OK is true when the endpoint is fit for traffic.
	OK bool
	// Reason names a failure: the health status the backend answered
	// (NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN) or the canonical gRPC code
	// name of the failed call (UNIMPLEMENTED, DEADLINE_EXCEEDED, ...).
	Reason string
	// Cause classifies a failure; CauseNone when OK.
	Cause Cause
	// Pushed marks a status pushed on a Watch stream: it takes effect at
	// once, so a pushed SERVING readmits without waiting for
	// HealthyThreshold successes, and a pushed failure evicts at once even
	// when its cause is transport (a Watch stream found dead by its
	// liveness check is such a failure).
	Pushed bool
	// Latency is how long the probe took (zero for pushed statuses).
	Latency time.Duration
	// Err carries the underlying error of a failure, for debug logs.
	Err error
}

// Status is an endpoint's health with the counters that drive it.
type Status struct {
	Health Health
	// Reason and Cause describe the failure that made the endpoint
	// unhealthy, or the latest failure while it stays unhealthy.
	Reason string
	Cause  Cause
	// Since is when Health last changed.
	Since time.Time
	// Failures and Successes count consecutive probe outcomes; a success
	// resets Failures and a failure resets Successes.
	Failures  int
	Successes int
}

// PanicEligible reports whether the endpoint may receive traffic when its
// cluster is in panic: it failed only for transport reasons, so the probes
// rather than the backend may be what is broken.
func (s Status) PanicEligible() bool {
	return s.Health == Unhealthy && s.Cause == CauseTransport
}

// Transition is a change of Health worth an eviction-log record.
type Transition uint8

// Transitions.
const (
	NoTransition Transition = iota
	// Admitted: pending -> healthy.
	Admitted
	// Evicted: pending or healthy -> unhealthy.
	Evicted
	// Readmitted: unhealthy -> healthy.
	Readmitted
)

var transitionNames = [...]string{"none", "admitted", "evicted", "readmitted"}

func (t Transition) String() string {
	if int(t) < len(transitionNames) {
		return transitionNames[t]
	}
	return fmt.Sprintf("transition(%d)", uint8(t))
}

// Thresholds are the parts of a health-check configuration that drive the
// state machine.
type Thresholds struct {
	// Unhealthy is how many consecutive transport failures evict a pending
	// or healthy endpoint.
	Unhealthy int
	// Healthy is how many consecutive successes readmit an unhealthy one.
	Healthy int
}

// successCap bounds Successes so that a steadily healthy endpoint's status
// stops changing, and the store is not rewritten after every probe.
func successCap(t Thresholds) int { return max(t.Healthy, 1) }

// failureCap bounds Failures of an unhealthy endpoint for the same reason:
// a steadily failing endpoint's status stops changing once the count has
// reached the threshold (or the failure that evicted it, if higher).
func failureCap(t Thresholds, failures int) int { return max(t.Unhealthy, 1, failures) }

// Next applies one probe result to s and returns the new status and the
// transition it caused, if any. It is a pure function: the caller owns the
// clock and the status.
func (s Status) Next(r Result, t Thresholds, now time.Time) (Status, Transition) {
	n := s
	if s.Health == Draining {
		return n, NoTransition
	}
	if r.OK {
		n.Failures = 0
		n.Successes = min(s.Successes+1, successCap(t))
		switch s.Health {
		case Pending:
			n.Health, n.Reason, n.Cause, n.Since = Healthy, "", CauseNone, now
			return n, Admitted
		case Unhealthy:
			if r.Pushed || n.Successes >= t.Healthy {
				n.Health, n.Reason, n.Cause, n.Since = Healthy, "", CauseNone, now
				return n, Readmitted
			}
		}
		return n, NoTransition
	}

	n.Successes = 0
	n.Failures = s.Failures + 1
	switch s.Health {
	case Pending, Healthy:
		if r.Cause != CauseTransport || r.Pushed || n.Failures >= t.Unhealthy {
			n.Health, n.Reason, n.Cause, n.Since = Unhealthy, r.Reason, r.Cause, now
			return n, Evicted
		}
	case Unhealthy:
		// Still out; keep the latest reason so that panic eligibility
		// follows what the backend says now.
		n.Reason, n.Cause = r.Reason, r.Cause
		n.Failures = min(n.Failures, failureCap(t, s.Failures))
	}
	return n, NoTransition
}
