package checker

import (
	"slices"
	"testing"
	"time"
)

func TestStatusNext(t *testing.T) {
	ok := Result{OK: true}
	pushedOK := Result{OK: true, Pushed: true}
	notServing := Result{Reason: "NOT_SERVING", Cause: CauseAnswer}
	pushedNotServing := Result{Reason: "NOT_SERVING", Cause: CauseAnswer, Pushed: true}
	notFound := Result{Reason: "NOT_FOUND", Cause: CauseAnswer}
	timeout := Result{Reason: "DEADLINE_EXCEEDED", Cause: CauseTransport}
	refused := Result{Reason: "UNAVAILABLE", Cause: CauseTransport}
	deadStream := Result{Reason: "DEADLINE_EXCEEDED", Cause: CauseTransport, Pushed: true}
	th := Thresholds{Unhealthy: 3, Healthy: 2}

	tests := []struct {
		name    string
		start   Health
		results []Result
		want    []Transition // transitions, in order
		health  Health
		reason  string
		cause   Cause
		fails   int
		succs   int
	}{
		{"pending admitted by one success", Pending, []Result{ok}, []Transition{Admitted}, Healthy, "", CauseNone, 0, 1},
		{"pending admitted by pushed serving", Pending, []Result{pushedOK}, []Transition{Admitted}, Healthy, "", CauseNone, 0, 1},
		{"pending evicted by answer at once", Pending, []Result{notServing}, []Transition{Evicted}, Unhealthy, "NOT_SERVING", CauseAnswer, 1, 0},
		{"pending stays pending below transport threshold", Pending, []Result{refused, refused}, nil, Pending, "", CauseNone, 2, 0},
		{"pending evicted after threshold transport failures", Pending, []Result{refused, timeout, refused}, []Transition{Evicted}, Unhealthy, "UNAVAILABLE", CauseTransport, 3, 0},
		{"healthy evicted by answer at once", Healthy, []Result{notServing}, []Transition{Evicted}, Unhealthy, "NOT_SERVING", CauseAnswer, 1, 0},
		{"healthy keeps through two transport failures", Healthy, []Result{timeout, timeout}, nil, Healthy, "", CauseNone, 2, 0},
		{"success resets the transport count", Healthy, []Result{timeout, timeout, ok, timeout, timeout}, nil, Healthy, "", CauseNone, 2, 0},
		{"healthy evicted after threshold transport failures", Healthy, []Result{timeout, refused, timeout}, []Transition{Evicted}, Unhealthy, "DEADLINE_EXCEEDED", CauseTransport, 3, 0},
		{"dead watch stream evicts at once", Healthy, []Result{deadStream}, []Transition{Evicted}, Unhealthy, "DEADLINE_EXCEEDED", CauseTransport, 1, 0},
		{"pushed not serving evicts at once", Healthy, []Result{pushedNotServing}, []Transition{Evicted}, Unhealthy, "NOT_SERVING", CauseAnswer, 1, 0},
		{"readmitted after healthy threshold successes", Unhealthy, []Result{ok, ok}, []Transition{Readmitted}, Healthy, "", CauseNone, 0, 2},
		{"one success is not enough to readmit", Unhealthy, []Result{ok}, nil, Unhealthy, "", CauseNone, 0, 1},
		{"a failure resets the success count", Unhealthy, []Result{ok, refused, ok}, nil, Unhealthy, "UNAVAILABLE", CauseTransport, 0, 1},
		{"pushed serving readmits at once", Unhealthy, []Result{pushedOK}, []Transition{Readmitted}, Healthy, "", CauseNone, 0, 1},
		{"reason and cause follow the latest failure", Healthy, []Result{notServing, refused}, []Transition{Evicted}, Unhealthy, "UNAVAILABLE", CauseTransport, 2, 0},
		{"answer after transport failure revokes panic eligibility", Healthy, []Result{timeout, timeout, timeout, notFound}, []Transition{Evicted}, Unhealthy, "NOT_FOUND", CauseAnswer, 3, 0},
		{"failures stop counting once unhealthy at threshold", Healthy, []Result{notServing, refused, refused, refused, refused}, []Transition{Evicted}, Unhealthy, "UNAVAILABLE", CauseTransport, 3, 0},
		{"successes stop counting at the healthy threshold", Healthy, []Result{ok, ok, ok, ok}, nil, Healthy, "", CauseNone, 0, 2},
		{"flap evict readmit evict", Healthy, []Result{pushedNotServing, pushedOK, pushedNotServing}, []Transition{Evicted, Readmitted, Evicted}, Unhealthy, "NOT_SERVING", CauseAnswer, 1, 0},
		{"draining is terminal", Draining, []Result{ok, notServing, pushedOK, refused, refused, refused}, nil, Draining, "", CauseNone, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Unix(1000, 0)
			s := Status{Health: tt.start, Since: now}
			var got []Transition
			for i, r := range tt.results {
				at := now.Add(time.Duration(i+1) * time.Second)
				n, tr := s.Next(r, th, at)
				if tr != NoTransition {
					got = append(got, tr)
					if !n.Since.Equal(at) {
						t.Errorf("step %d: Since %v, want %v (the transition time)", i, n.Since, at)
					}
				} else if !n.Since.Equal(s.Since) {
					t.Errorf("step %d: Since changed without a transition", i)
				}
				s = n
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("transitions %v, want %v", got, tt.want)
			}
			if s.Health != tt.health || s.Reason != tt.reason || s.Cause != tt.cause || s.Failures != tt.fails || s.Successes != tt.succs {
				t.Errorf("final %+v, want health %v reason %q cause %v failures %d successes %d",
					s, tt.health, tt.reason, tt.cause, tt.fails, tt.succs)
			}
		})
	}
}

func TestStatusNextSteadyStateIsStable(t *testing.T) {
	th := Thresholds{Unhealthy: 3, Healthy: 2}
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		name string
		s    Status
		r    Result
	}{
		{"healthy serving", Status{Health: Healthy, Successes: 2, Since: now}, Result{OK: true}},
		{"unhealthy refused", Status{Health: Unhealthy, Reason: "UNAVAILABLE", Cause: CauseTransport, Failures: 3, Since: now}, Result{Reason: "UNAVAILABLE", Cause: CauseTransport}},
		{"unhealthy not serving", Status{Health: Unhealthy, Reason: "NOT_SERVING", Cause: CauseAnswer, Failures: 5, Since: now}, Result{Reason: "NOT_SERVING", Cause: CauseAnswer}},
	} {
		if n, tr := tc.s.Next(tc.r, th, now.Add(time.Hour)); n != tc.s || tr != NoTransition {
			t.Errorf("%s: Next changed a steady status: %+v -> %+v (%v)", tc.name, tc.s, n, tr)
		}
	}
}

func TestPanicEligible(t *testing.T) {
	for _, tc := range []struct {
		s    Status
		want bool
	}{
		{Status{Health: Unhealthy, Cause: CauseTransport}, true},
		{Status{Health: Unhealthy, Cause: CauseAnswer}, false},
		{Status{Health: Healthy}, false},
		{Status{Health: Pending, Cause: CauseTransport}, false},
	} {
		if got := tc.s.PanicEligible(); got != tc.want {
			t.Errorf("%+v.PanicEligible() = %v, want %v", tc.s, got, tc.want)
		}
	}
}
