package balancer

import (
	"sync/atomic"

	"google.golang.org/grpc/codes"
)

// Outcome is what one RPC or connection says about the endpoint that
// carried it, for passive outlier detection.
type Outcome uint8

// Outcomes.
const (
	// OutcomeIgnored says nothing about the endpoint: the client gave up
	// (its deadline or cancellation).
	OutcomeIgnored Outcome = iota
	// OutcomeSuccess: the endpoint answered (any status but a failure).
	OutcomeSuccess
	// OutcomeFailure: the endpoint failed the RPC, or could not be
	// reached or lost it.
	OutcomeFailure
)

// Classify is what an RPC that ended with code says about its endpoint:
// UNAVAILABLE, INTERNAL, UNKNOWN and DATA_LOSS are failures (vigil also
// ends an RPC lost to the backend connection with one of them);
// CANCELLED and DEADLINE_EXCEEDED are the client's own doing (its
// cancellation, or its deadline, which gRPC propagates to the backend);
// every other code is an answer, so a success.
func Classify(code codes.Code) Outcome {
	switch code {
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.DataLoss:
		return OutcomeFailure
	case codes.Canceled, codes.DeadlineExceeded:
		return OutcomeIgnored
	}
	return OutcomeSuccess
}

// OutcomeWatch is how an endpoint's owner takes the outcomes the data
// paths report (Endpoint.Report): it counts them while a watch is set,
// and signals a run of consecutive failures.
type OutcomeWatch struct {
	// Threshold is how many consecutive failures trip the endpoint; 0
	// never trips it (the outcomes are still counted).
	Threshold uint32
	// Rates: count successes too (a failure-rate rule needs them);
	// without it a success costs one atomic load.
	Rates bool
	// Tripped gets a value, without blocking, when an endpoint trips: its
	// consecutive failures reached Threshold. Several endpoints may share
	// it; Endpoint.TakeTripped says which tripped.
	Tripped chan<- struct{}
}

// outcomes are an endpoint's counters for outlier detection, written by
// the data paths with atomics only: no lock, no allocation per report.
type outcomes struct {
	watch atomic.Pointer[OutcomeWatch]
	// successes and failures count since the owner last took them.
	successes, failures atomic.Uint64
	// consecutive counts failures since the last success (or reset).
	consecutive atomic.Uint32
	// lastFailure is the code of the latest failure.
	lastFailure atomic.Uint32
	tripped     atomic.Bool
}

// Report tells e how an RPC (grpc) or connection (tcp) it carried ended:
// the RPC's status code, or codes.OK / codes.Unavailable for a connection
// (see Classify). It costs one atomic load while no OutcomeWatch is set,
// and a few atomic operations while one is; it never locks or allocates.
func (e *Endpoint) Report(code codes.Code) {
	w := e.out.watch.Load()
	if w == nil {
		return
	}
	switch Classify(code) {
	case OutcomeSuccess:
		if w.Rates {
			e.out.successes.Add(1)
		}
		if e.out.consecutive.Load() != 0 {
			e.out.consecutive.Store(0)
		}
	case OutcomeFailure:
		e.out.failures.Add(1)
		e.out.lastFailure.Store(uint32(code))
		// Exactly one report sees the count reach the threshold.
		if n := e.out.consecutive.Add(1); n == w.Threshold {
			e.out.tripped.Store(true)
			select {
			case w.Tripped <- struct{}{}:
			default: // a signal is pending already; its reader finds e too
			}
		}
	}
}

// SetOutcomeWatch starts (w non-nil) or stops (nil) the counting of e's
// outcomes; the counters start from zero either way. The endpoint's owner
// calls it.
func (e *Endpoint) SetOutcomeWatch(w *OutcomeWatch) {
	e.out.watch.Store(w)
	e.ResetOutcomes()
}

// ResetOutcomes zeroes every counter of e: a new start, after an ejection
// or when it ends.
func (e *Endpoint) ResetOutcomes() {
	e.out.successes.Store(0)
	e.out.failures.Store(0)
	e.out.consecutive.Store(0)
	e.out.tripped.Store(false)
}

// TakeOutcomes returns the successes and failures reported since the last
// call (or reset) and starts counting anew.
func (e *Endpoint) TakeOutcomes() (successes, failures uint64) {
	return e.out.successes.Swap(0), e.out.failures.Swap(0)
}

// ConsecutiveFailures is how many failures were reported since the last
// success or reset.
func (e *Endpoint) ConsecutiveFailures() uint32 { return e.out.consecutive.Load() }

// LastFailure is the code of the latest failure reported.
func (e *Endpoint) LastFailure() codes.Code { return codes.Code(e.out.lastFailure.Load()) }

// TakeTripped reports whether e tripped since the last call, and clears
// it.
func (e *Endpoint) TakeTripped() bool {
	return e.out.tripped.Load() && e.out.tripped.Swap(false)
}

// RearmTrip lets e trip again after another Threshold failures in a row:
// its owner did not act on the last trip.
func (e *Endpoint) RearmTrip() { e.out.consecutive.Store(0) }
