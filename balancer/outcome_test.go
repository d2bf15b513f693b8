package balancer

import (
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
)

func TestClassify(t *testing.T) {
	for code := codes.OK; code <= codes.Unauthenticated; code++ {
		want := OutcomeSuccess
		switch code {
		case codes.Unavailable, codes.Internal, codes.Unknown, codes.DataLoss:
			want = OutcomeFailure
		case codes.Canceled, codes.DeadlineExceeded:
			want = OutcomeIgnored
		}
		if got := Classify(code); got != want {
			t.Errorf("Classify(%v) = %v, want %v", code, got, want)
		}
	}
}

// TestReportTripsOnce: of many goroutines reporting failures at once,
// exactly one trip is signalled per run; a success ends the run; a report
// costs no allocation.
func TestReportTripsOnce(t *testing.T) {
	e := NewEndpoint("10.0.0.1:1")
	e.Report(codes.Unavailable) // no watch: nothing counted
	tripped := make(chan struct{}, 1)
	e.SetOutcomeWatch(&OutcomeWatch{Threshold: 50, Rates: true, Tripped: tripped})
	if e.ConsecutiveFailures() != 0 {
		t.Fatal("counted before the watch was set")
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				e.Report(codes.Internal)
			}
		})
	}
	wg.Wait()
	if len(tripped) != 1 || !e.TakeTripped() || e.TakeTripped() {
		t.Fatal("want exactly one trip")
	}
	if s, f := e.TakeOutcomes(); s != 0 || f != 800 || e.LastFailure() != codes.Internal {
		t.Fatalf("outcomes %d/%d, last %v", s, f, e.LastFailure())
	}
	e.Report(codes.Canceled)
	if e.ConsecutiveFailures() != 800 {
		t.Fatal("a cancellation changed the run")
	}
	e.Report(codes.NotFound)
	if e.ConsecutiveFailures() != 0 {
		t.Fatal("an answer did not end the run")
	}
	if n := testing.AllocsPerRun(1000, func() { e.Report(codes.Unavailable); e.Report(codes.OK) }); n != 0 {
		t.Fatalf("%v allocations per report", n)
	}
}

func BenchmarkReport(b *testing.B) {
	e := NewEndpoint("10.0.0.1:1")
	b.Run("off", func(b *testing.B) {
		for b.Loop() {
			e.Report(codes.OK)
		}
	})
	for _, rates := range []bool{false, true} {
		e.SetOutcomeWatch(&OutcomeWatch{Threshold: 5, Rates: rates, Tripped: make(chan struct{}, 1)})
		name := "consecutive"
		if rates {
			name = "consecutive+rates"
		}
		b.Run(name, func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					e.Report(codes.OK)
				}
			})
		})
	}
}
