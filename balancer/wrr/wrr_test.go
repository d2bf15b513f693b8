package wrr

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/balancer"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestReportWeight(t *testing.T) {
	tests := []struct {
		name    string
		r       Report
		penalty float64
		want    float64
		ok      bool
	}{
		{"application utilization", Report{ApplicationUtilization: 0.5, CPUUtilization: 0.9, QPS: 100}, 1, 200, true},
		{"cpu when no application utilization", Report{CPUUtilization: 0.25, QPS: 100}, 1, 400, true},
		{"errors add eps/qps x penalty", Report{CPUUtilization: 0.5, QPS: 100, EPS: 50}, 1, 100, true},
		{"penalty 2", Report{CPUUtilization: 0.5, QPS: 100, EPS: 50}, 2, 100.0 / 1.5, true},
		{"penalty 0 ignores errors", Report{CPUUtilization: 0.5, QPS: 100, EPS: 50}, 0, 200, true},
		{"utilization above 1", Report{CPUUtilization: 2, QPS: 100}, 1, 50, true},
		{"zero utilization ignored", Report{QPS: 100}, 1, 0, false},
		{"zero qps ignored", Report{CPUUtilization: 0.5}, 1, 0, false},
		{"negative qps ignored", Report{CPUUtilization: 0.5, QPS: -1}, 1, 0, false},
		{"NaN utilization ignored", Report{CPUUtilization: math.NaN(), QPS: 10}, 1, 0, false},
		{"infinite qps ignored", Report{CPUUtilization: 0.5, QPS: math.Inf(1)}, 1, 0, false},
		{"NaN eps counts as none", Report{CPUUtilization: 0.5, QPS: 10, EPS: math.NaN()}, 1, 20, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.r.Weight(tt.penalty)
			if ok != tt.ok || math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Weight(%v) = %v, %v; want %v, %v", tt.penalty, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestStateRules steps one endpoint's state through gRFC A58's rules:
// each step reports (or not) at an offset, then reads the weight.
func TestStateRules(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg := Config{Period: time.Second, Blackout: 10 * time.Second, Expiration: time.Minute, ErrorPenalty: 1}
	valid := &Report{CPUUtilization: 0.5, QPS: 100} // weight 200
	empty := &Report{QPS: 100}                      // no utilization: ignored
	type step struct {
		at     time.Duration
		report *Report
		want   float64
	}
	tests := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"no report, no weight", cfg, []step{{at: 0, want: 0}}},
		{"blackout holds the weight back", cfg, []step{
			{at: 0, report: valid, want: 0},
			{at: 9 * time.Second, report: valid, want: 0},
			{at: 10 * time.Second, report: valid, want: 200},
		}},
		{"blackout 0 uses the first report", Config{Period: time.Second, Expiration: time.Minute, ErrorPenalty: 1}, []step{
			{at: 0, report: valid, want: 200},
		}},
		{"empty reports start no blackout", cfg, []step{
			{at: 0, report: empty, want: 0},
			{at: 20 * time.Second, report: valid, want: 0},
			{at: 29 * time.Second, want: 0},
			{at: 30 * time.Second, want: 200},
		}},
		{"empty reports keep the last weight", cfg, []step{
			{at: 0, report: valid, want: 0},
			{at: 15 * time.Second, report: empty, want: 200},
		}},
		{"expiration drops the weight", cfg, []step{
			{at: 0, report: valid, want: 0},
			{at: 30 * time.Second, report: valid, want: 200},
			{at: 89 * time.Second, want: 200},
			{at: 90 * time.Second, want: 0},
		}},
		{"after expiration the blackout starts again", cfg, []step{
			{at: 0, report: valid, want: 0},
			{at: 20 * time.Second, want: 200},
			{at: 90 * time.Second, want: 0},
			{at: 100 * time.Second, report: valid, want: 0},
			{at: 109 * time.Second, report: valid, want: 0},
			{at: 110 * time.Second, want: 200},
		}},
		{"a new report's weight replaces the old", cfg, []step{
			{at: 0, report: valid, want: 0},
			{at: 10 * time.Second, report: &Report{ApplicationUtilization: 0.8, QPS: 100}, want: 125},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s State
			for i, st := range tt.steps {
				now := t0.Add(st.at)
				if st.report != nil {
					s.Report(*st.report, now, tt.cfg.ErrorPenalty)
				}
				if got := s.Weight(now, tt.cfg); got != st.want {
					t.Fatalf("step %d (t=%v): Weight = %v, want %v", i, st.at, got, st.want)
				}
			}
		})
	}
}

func TestStateRestart(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg := Config{Period: time.Second, Blackout: 10 * time.Second, Expiration: time.Minute, ErrorPenalty: 1}
	var s State
	s.Report(Report{CPUUtilization: 0.5, QPS: 100}, t0, 1)
	if got := s.Weight(t0.Add(10*time.Second), cfg); got != 200 {
		t.Fatalf("Weight after blackout = %v, want 200", got)
	}
	s.Restart()
	if got := s.Weight(t0.Add(11*time.Second), cfg); got != 0 {
		t.Fatalf("Weight right after Restart = %v, want 0 (blackout again)", got)
	}
	s.Report(Report{CPUUtilization: 0.5, QPS: 100}, t0.Add(12*time.Second), 1)
	if got := s.Weight(t0.Add(21*time.Second), cfg); got != 0 {
		t.Fatalf("Weight 9s after the first report since Restart = %v, want 0", got)
	}
	if got := s.Weight(t0.Add(22*time.Second), cfg); got != 200 {
		t.Fatalf("Weight 10s after = %v, want 200", got)
	}
	if s.Last.QPS != 100 || !s.At.Equal(t0.Add(12*time.Second)) {
		t.Errorf("Last, At = %+v, %v; want the latest report", s.Last, s.At)
	}
}

func TestWeights(t *testing.T) {
	tests := []struct {
		name     string
		in, want []float64
		weighted bool
	}{
		{"all weighted", []float64{500, 200, 125}, []float64{500, 200, 125}, true},
		{"the unweighted get the mean", []float64{300, 0, 100}, []float64{300, 200, 100}, true},
		{"one weighted: round robin", []float64{300, 0, 0}, []float64{1, 1, 1}, false},
		{"none weighted: round robin", []float64{0, 0}, []float64{1, 1}, false},
		{"single endpoint", []float64{42}, []float64{1}, false},
		{"empty", []float64{}, []float64{}, false},
		{"NaN counts as none", []float64{math.NaN(), 10, 30}, []float64{20, 10, 30}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws := slices.Clone(tt.in)
			if got := Weights(ws); got != tt.weighted || !slices.Equal(ws, tt.want) {
				t.Errorf("Weights(%v) = %v, %v; want %v, %v", tt.in, ws, got, tt.want, tt.weighted)
			}
		})
	}
}

func TestPickerWeight(t *testing.T) {
	tests := []struct {
		w, heaviest float64
		want        uint32
	}{
		{500, 500, MaxPickerWeight},
		{250, 500, MaxPickerWeight / 2},
		{125, 500, 2500},
		{0.001, 500, 1},
		{0, 500, 1},
		{1, 0, 1},
		{600, 500, MaxPickerWeight},
	}
	for _, tt := range tests {
		if got := PickerWeight(tt.w, tt.heaviest); got != tt.want {
			t.Errorf("PickerWeight(%v, %v) = %d, want %d", tt.w, tt.heaviest, got, tt.want)
		}
	}
}

func TestProblems(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	bad := Config{Period: 10 * time.Millisecond, Blackout: -1, Expiration: 0, ErrorPenalty: math.NaN()}
	var fields []string
	for _, p := range bad.Problems() {
		fields = append(fields, p.Field)
	}
	if want := []string{"period", "blackout", "expiration", "error_penalty"}; !slices.Equal(fields, want) {
		t.Errorf("Problems fields = %v, want %v", fields, want)
	}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "period: must be at least 100ms") {
		t.Errorf("Validate() = %v", err)
	}
}

// TestPolicySplit checks that the policy's picker spreads picks by the
// weights it is built with, exactly over a cycle.
func TestPolicySplit(t *testing.T) {
	p, ok := balancer.PolicyByName(Name)
	if !ok {
		t.Fatal("weighted_round_robin not registered")
	}
	ws := []float64{500, 200, 125} // utilization 0.2, 0.5, 0.8 at qps 100
	Weights(ws)
	eps := make([]balancer.Weighted, len(ws))
	for i, w := range ws {
		eps[i] = balancer.Weighted{Endpoint: balancer.NewEndpoint(string(rune('a' + i))), Weight: PickerWeight(w, 500)}
	}
	picker := p.Build(eps)
	counts := map[*balancer.Endpoint]int{}
	const n = 16500 // Σ picker weights (10000+4000+2500)
	for range n {
		counts[picker.Pick()]++
	}
	for i, e := range eps {
		if got, want := counts[e.Endpoint], int(e.Weight); got != want {
			t.Errorf("endpoint %d: %d picks of %d, want %d", i, got, n, want)
		}
	}
	if allocs := testing.AllocsPerRun(1000, func() { picker.Pick() }); allocs != 0 {
		t.Errorf("Pick allocates %v times", allocs)
	}
}
