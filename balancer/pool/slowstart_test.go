package pool

import (
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/leastrequest"
	"github.com/vigil-proxy/vigil/balancer/outlier"
	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/balancer/random"
	"github.com/vigil-proxy/vigil/balancer/roundrobin"
	"github.com/vigil-proxy/vigil/balancer/slowstart"
)

// fakeClock is the pool's clock in these tests: it moves only when the
// test says.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// rampPool is a pool without goroutines of its own, on a fake clock,
// whose ramp steps the test makes (step), with addrs admitted at the
// clock's start.
type rampPool struct {
	*Pool
	t   testing.TB
	clk *fakeClock
	rec *recorder
}

func newRampPool(t testing.TB, spec Spec, addrs ...string) *rampPool {
	t.Helper()
	rec := &recorder{}
	p := newPool("c", Options{Sinks: []event.Sink{rec}}, false)
	t.Cleanup(p.Close)
	clk := &fakeClock{}
	clk.ns.Store(time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC).UnixNano())
	p.now = clk.now
	spec.HealthCheck, spec.Endpoints = none(), endpoints(addrs...)
	p.Apply(spec) // mode none: every endpoint admitted now
	p.build()
	return &rampPool{Pool: p, t: t, clk: clk, rec: rec}
}

// step makes the ramp goroutine's step and returns when it asks for the
// next one (0: never).
func (r *rampPool) step() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rampLocked()
}

// weights are the picker's integer weights, by address.
func (r *rampPool) weights() map[string]uint32 {
	out := map[string]uint32{}
	for _, w := range r.Cluster().Snapshot().Routable {
		out[w.Endpoint.Address()] = w.Weight
	}
	return out
}

func (r *rampPool) effective(addr string) float64 {
	w, ok := r.EffectiveWeight(addr)
	if !ok {
		r.t.Fatalf("%s: not in the pool", addr)
	}
	return w
}

// TestSlowStartRamp follows a readmitted endpoint's weight over its
// window, step by step, and checks that the builds stop with the ramp.
func TestSlowStartRamp(t *testing.T) {
	cfg := slowstart.Config{Window: 10 * time.Second, Aggression: 1, MinWeightPercent: 10}
	a, b := "10.0.0.1:1", "10.0.0.2:1"
	r := newRampPool(t, Spec{SlowStart: &cfg}, a, b)

	// Both admitted together: both ramp, at the same weights, so their
	// shares are equal from the start (README: all new, all ramp).
	if w := r.weights(); w[a] != 10 || w[b] != 10 {
		t.Fatalf("at admission: picker weights %v, want 10 each (10%% of 1, scaled)", w)
	}
	for r.step() != 0 {
		r.clk.advance(cfg.Step())
	}
	if w := r.weights(); w[a] != 1 || w[b] != 1 {
		t.Fatalf("after the window: picker weights %v, want 1 each (unscaled)", w)
	}

	// b is evicted and readmitted: it ramps alone.
	r.setHealth(b, refused)
	r.setHealth(b, healthy)
	r.build()
	builds := r.rec.count(event.PickerBuilt)
	var shares []float64
	for i := 0; ; i++ {
		want := max(0.1, float64(i)/10) // a step is a tenth of the window
		if got := r.effective(b); math.Abs(got-want) > 1e-9 {
			t.Fatalf("step %d: effective weight %v, want %v", i, got, want)
		}
		if got := r.effective(a); got != 1 {
			t.Fatalf("step %d: the endpoint that does not ramp has effective weight %v", i, got)
		}
		w := r.weights()
		if i < 10 && (w[a] != 100 || w[b] != slowstart.PickerWeight(1, want)) {
			t.Fatalf("step %d: picker weights %v, want %s:100 %s:%d", i, w, a, b, slowstart.PickerWeight(1, want))
		}
		// Round robin is exact: over a full cycle b gets its share.
		n := int(w[a] + w[b])
		got := picks(r.Pool, n)
		shares = append(shares, float64(got[b])/float64(n))
		if got[b] != int(w[b]) {
			t.Fatalf("step %d: %d of %d picks to %s, want %d", i, got[b], n, b, w[b])
		}
		r.clk.advance(cfg.Step())
		if next := r.step(); next == 0 {
			break
		} else if next != cfg.Step() {
			t.Fatalf("next step in %v, want %v", next, cfg.Step())
		}
	}
	t.Logf("b's share of the picks, step by step: %.3f", shares)
	if w := r.weights(); w[a] != 1 || w[b] != 1 {
		t.Fatalf("after the ramp: picker weights %v, want 1 each", w)
	}
	if got := r.effective(b); got != 1 {
		t.Fatalf("after the ramp: effective weight %v", got)
	}
	// 10 steps after the readmission's build: at 1s the weight is still
	// the 10%% minimum (the same picker, not rebuilt), 2s-9s make 8
	// builds, and the last one goes to the full, unscaled weights.
	if got := r.rec.count(event.PickerBuilt) - builds; got != 9 {
		t.Errorf("%d builds during the ramp, want 9", got)
	}
	builds = r.rec.count(event.PickerBuilt)
	for range 5 {
		r.clk.advance(cfg.Step())
		if next := r.step(); next != 0 {
			t.Fatalf("a step after the ramp asked for another in %v", next)
		}
	}
	if got := r.rec.count(event.PickerBuilt) - builds; got != 0 {
		t.Errorf("%d builds after the ramp ended", got)
	}
}

// TestSlowStartEvictedMidRamp: an endpoint evicted while it ramps stops
// ramping (no more builds for it), and ramps afresh when readmitted.
func TestSlowStartEvictedMidRamp(t *testing.T) {
	cfg := slowstart.Config{Window: 10 * time.Second, Aggression: 1, MinWeightPercent: 10}
	a, b := "10.0.0.1:1", "10.0.0.2:1"
	r := newRampPool(t, Spec{SlowStart: &cfg}, a, b)
	r.clk.advance(6 * time.Second)
	r.setHealth(b, notServing)
	r.clk.advance(time.Second)
	if next := r.step(); next == 0 {
		t.Fatal("a still ramps: steps must go on")
	}
	r.setHealth(a, refused)
	if next := r.step(); next != 0 {
		t.Fatalf("nothing ramps, yet a step asked for another in %v", next)
	}
	r.setHealth(b, healthy)
	if got := r.effective(b); got != 0.1 {
		t.Fatalf("readmitted: effective weight %v, want 0.1", got)
	}
}

// TestSlowStartReload: a change of the settings keeps the ramps in
// progress (their start), turning slow start off ends them, and turning
// it on ramps nobody already in.
func TestSlowStartReload(t *testing.T) {
	cfg := slowstart.Config{Window: 10 * time.Second, Aggression: 1, MinWeightPercent: 10}
	a, b := "10.0.0.1:1", "10.0.0.2:1"
	r := newRampPool(t, Spec{SlowStart: &cfg}, a, b)
	spec := func(c *slowstart.Config) Spec {
		return Spec{HealthCheck: none(), Endpoints: endpoints(a, b), SlowStart: c}
	}
	r.clk.advance(5 * time.Second)
	if got := r.effective(a); got != 0.5 {
		t.Fatalf("half way: %v", got)
	}
	longer := cfg
	longer.Window = 20 * time.Second
	if plan := r.Apply(spec(&longer)); !plan.SlowStartChanged {
		t.Fatal("plan does not say slow start changed")
	}
	if got := r.effective(a); got != 0.25 {
		t.Fatalf("window now 20s, 5s in: effective weight %v, want 0.25 (the ramp kept its start)", got)
	}
	if w := r.weights(); w[a] != 25 {
		t.Fatalf("the reload's build: picker weights %v, want 25", w)
	}
	if plan := r.Apply(spec(nil)); !plan.SlowStartChanged {
		t.Fatal("plan does not say slow start changed")
	}
	if got, w := r.effective(a), r.weights(); got != 1 || w[a] != 1 {
		t.Fatalf("slow start off: effective weight %v, picker weights %v; want the full weight at once", got, w)
	}
	if next := r.step(); next != 0 {
		t.Fatalf("off, yet a step asked for another in %v", next)
	}
	r.Apply(spec(&cfg))
	if got := r.effective(a); got != 1 {
		t.Fatalf("turned on: an endpoint already in ramps (%v)", got)
	}
}

// TestSlowStartPolicies: least_request and random take the ramped
// weights too (they draw by weight; round robin is TestSlowStartRamp).
func TestSlowStartPolicies(t *testing.T) {
	cfg := slowstart.Config{Window: 10 * time.Second, Aggression: 1, MinWeightPercent: 10}
	for _, spec := range []Spec{{Policy: leastrequest.Policy{}}, {Policy: random.Policy{}}} {
		t.Run(spec.Policy.Name(), func(t *testing.T) {
			spec.SlowStart = &cfg
			a, b := "10.0.0.1:1", "10.0.0.2:1"
			r := newRampPool(t, spec, a, b)
			r.clk.advance(time.Hour)
			r.step() // the ramps of the admission end
			r.setHealth(b, refused)
			r.setHealth(b, healthy)
			r.build()
			// b at 10%: 1/11 of draws, about 1,820 of 20,000 (sd ~40).
			const n = 20000
			got := picks(r.Pool, n)[b]
			if want := n / 11; got < want-300 || got > want+300 {
				t.Fatalf("%s got %d of %d picks, want about %d", b, got, n, want)
			}
		})
	}
}

// TestSlowStartGoroutine runs the real ramp goroutine on the real clock:
// an endpoint readmitted ramps to its full weight in about the window,
// and the picker is unscaled again at the end.
func TestSlowStartGoroutine(t *testing.T) {
	cfg := slowstart.Config{Window: 500 * time.Millisecond, Aggression: 1, MinWeightPercent: 10}
	a, b := "10.0.0.1:1", "10.0.0.2:1"
	p := New("c", Options{})
	defer p.Close()
	p.Apply(Spec{HealthCheck: none(), Endpoints: endpoints(a, b), SlowStart: &cfg})
	p.setHealth(b, refused)
	p.setHealth(b, healthy)
	start := time.Now()
	waitFor(t, "the ramp to end", func() bool {
		w := map[string]uint32{}
		for _, e := range p.Cluster().Snapshot().Routable {
			w[e.Endpoint.Address()] = e.Weight
		}
		return w[a] == 1 && w[b] == 1
	})
	if took := time.Since(start); took < cfg.Window {
		t.Fatalf("ramp over after %v, before its window", took)
	}
	if w, _ := p.EffectiveWeight(b); w != 1 {
		t.Fatalf("effective weight %v after the ramp", w)
	}
}

// rampingPool is a pool of n endpoints under policy, the first tenth of
// them readmitted at the clock's present, so ramping.
func rampingPool(t testing.TB, policy balancer.Policy, n int) (*rampPool, []string) {
	cfg := slowstart.Config{Window: 10 * time.Second, Aggression: 1, MinWeightPercent: 10}
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("10.0.%d.%d:1", i/250, i%250)
	}
	r := newRampPool(t, Spec{Policy: policy, SlowStart: &cfg}, addrs...)
	r.clk.advance(time.Hour)
	r.step() // the ramps of the admission end
	readmit := addrs[:max(n/10, 1)]
	for _, a := range readmit {
		r.setHealth(a, refused)
		r.setHealth(a, healthy)
	}
	r.build()
	return r, readmit
}

var policiesUnderTest = []balancer.Policy{roundrobin.Policy{}, leastrequest.Policy{}, random.Policy{}}

// TestSlowStartPickAllocs: a pick between the ramp's rebuilds neither
// allocates nor returns nil, at every step of the ramp.
func TestSlowStartPickAllocs(t *testing.T) {
	for _, policy := range policiesUnderTest {
		t.Run(policy.Name(), func(t *testing.T) {
			r, _ := rampingPool(t, policy, 1000)
			for i := 0; ; i++ {
				if allocs := testing.AllocsPerRun(1000, func() {
					if r.Cluster().Pick() == nil {
						t.Fatal("Pick returned nil")
					}
				}); allocs != 0 {
					t.Fatalf("step %d: %v allocations per pick", i, allocs)
				}
				r.clk.advance(time.Second)
				if r.step() == 0 {
					break
				}
			}
		})
	}
}

// BenchmarkPickWhileRamping measures a pick while another goroutine
// rebuilds the picker with ramped weights: every 100ms (the fastest the
// pool rebuilds for a ramp), every millisecond (a hundred times that),
// and never, on the same pool once its ramps are over (today's pick,
// for comparison in one run). It reports rebuilds/s; its allocs/op
// include the rebuilds' own, spread over the picks
// (TestSlowStartPickAllocs shows a pick itself makes none).
func BenchmarkPickWhileRamping(b *testing.B) {
	for _, policy := range policiesUnderTest {
		for _, n := range []int{3, 1000} {
			for _, every := range []time.Duration{0, 100 * time.Millisecond, time.Millisecond} {
				name := fmt.Sprintf("%s/%d/rebuild=%v", policy.Name(), n, every)
				if every == 0 {
					name = fmt.Sprintf("%s/%d/rebuild=none", policy.Name(), n)
				}
				b.Run(name, func(b *testing.B) {
					benchPickWhileRamping(b, policy, n, every)
				})
			}
		}
	}
}

func benchPickWhileRamping(b *testing.B, policy balancer.Policy, n int, every time.Duration) {
	r, readmit := rampingPool(b, policy, n)
	stop, done := make(chan struct{}), make(chan struct{})
	var rebuilds atomic.Int64
	if every == 0 {
		// Steady: the ramps end and nothing rebuilds.
		r.clk.advance(time.Hour)
		for r.step() != 0 {
		}
		close(done)
	} else {
		go func() {
			defer close(done)
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				r.clk.advance(time.Second)
				if r.step() == 0 {
					// Ramp over: start it again.
					for _, a := range readmit {
						r.setHealth(a, refused)
						r.setHealth(a, healthy)
					}
				}
				rebuilds.Add(1)
			}
		}()
	}
	b.ReportAllocs()
	var sink *balancer.Endpoint
	for b.Loop() {
		sink = r.Cluster().Pick()
	}
	b.StopTimer()
	close(stop)
	<-done
	if sink == nil {
		b.Fatal("Pick returned nil")
	}
	b.ReportMetric(float64(rebuilds.Load())/b.Elapsed().Seconds(), "rebuilds/s")
}

// TestSlowStartAfterEjection: the end of an outlier ejection is a
// readmission, and ramps like one.
func TestSlowStartAfterEjection(t *testing.T) {
	cfg := slowstart.Config{Window: 10 * time.Second, Aggression: 1, MinWeightPercent: 10}
	oc := outlier.DefaultConfig()
	oc.ConsecutiveFailures, oc.BaseEjectionTime, oc.Interval, oc.MaxEjectionPercent = 3, time.Second, time.Hour, 50
	a, b := "10.0.0.1:1", "10.0.0.2:1"
	r := newRampPool(t, Spec{SlowStart: &cfg, Outlier: &oc}, a, b)
	r.clk.advance(time.Hour)
	r.step()
	review := func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.reviewOutliersLocked(r.clk.now())
	}
	r.mu.Lock()
	ep := r.members[b].ep
	r.mu.Unlock()
	for range 3 {
		ep.Report(codes.Unavailable)
	}
	review()
	r.build()
	if w := r.weights(); len(w) != 1 {
		t.Fatalf("not ejected: picker weights %v", w)
	}
	r.clk.advance(2 * time.Second)
	review()
	if got := r.effective(b); got != 0.1 {
		t.Fatalf("readmitted at the end of its ejection: effective weight %v, want 0.1", got)
	}
	r.build()
	if w := r.weights(); w[a] != 100 || w[b] != 10 {
		t.Fatalf("picker weights %v, want 100 and 10", w)
	}
}
