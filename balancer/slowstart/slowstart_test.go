package slowstart

import (
	"math"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestWeight holds the formula to Envoy's: weight x max(min_weight_percent/100,
// (t/window)^(1/aggression)), the full weight from the end of the window.
func TestWeight(t *testing.T) {
	const w = 30 * time.Second
	for _, tt := range []struct {
		name       string
		aggression float64
		minPct     int
		weight     uint32
		elapsed    time.Duration
		want       float64
	}{
		{"start is the minimum", 1, 10, 1, 0, 0.1},
		{"linear below the minimum", 1, 10, 1, 2 * time.Second, 0.1},
		{"linear", 1, 10, 1, 15 * time.Second, 0.5},
		{"linear, weight 10", 1, 10, 10, 24 * time.Second, 8},
		{"end of window", 1, 10, 4, w, 4},
		{"after the window", 1, 10, 4, time.Hour, 4},
		{"aggression 2 rises faster", 2, 10, 1, 7500 * time.Millisecond, 0.5}, // sqrt(1/4)
		{"aggression 0.5 rises slower", 0.5, 10, 1, 15 * time.Second, 0.25},   // (1/2)^2
		{"aggression 0.5 floored", 0.5, 10, 1, 6 * time.Second, 0.1},          // (1/5)^2 = 0.04
		{"no minimum", 1, 0, 100, 0, 0},
		{"minimum 100 is no ramp", 1, 100, 3, 0, 3},
		{"clock stepped back", 1, 10, 1, -time.Second, 0.1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Window: w, Aggression: tt.aggression, MinWeightPercent: tt.minPct}
			if got := c.Weight(tt.weight, tt.elapsed); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Weight(%d, %v) = %v, want %v", tt.weight, tt.elapsed, got, tt.want)
			}
		})
	}
}

func TestStepAndRamping(t *testing.T) {
	for _, tt := range []struct {
		window, step time.Duration
	}{
		{30 * time.Second, 3 * time.Second},
		{time.Second, MinStep},
		{200 * time.Millisecond, MinStep},
	} {
		if got := (Config{Window: tt.window}).Step(); got != tt.step {
			t.Errorf("window %v: step %v, want %v", tt.window, got, tt.step)
		}
	}
	c := DefaultConfig()
	if !c.Ramping(c.Window-1) || c.Ramping(c.Window) {
		t.Error("Ramping must hold before the end of the window only")
	}
}

func TestPickerWeight(t *testing.T) {
	for _, tt := range []struct {
		weight uint32
		f      float64
		want   uint32
	}{
		{1, 1, 100}, {1, 0.1, 10}, {1, 0.123, 12}, {1, 0, 1}, {10000, 1, 1000000}, {3, 0.5, 150},
	} {
		if got := PickerWeight(tt.weight, tt.f); got != tt.want {
			t.Errorf("PickerWeight(%d, %v) = %d, want %d", tt.weight, tt.f, got, tt.want)
		}
	}
}

func TestProblems(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	err := Config{Window: 0, Aggression: math.NaN(), MinWeightPercent: 101}.Validate()
	for _, want := range []string{"window: must be positive", "aggression: must be a positive number", "min_weight_percent: must be from 0 to 100"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}
