package outlier

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEjectionTime(t *testing.T) {
	c := DefaultConfig() // 30s base, 300s max
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{0, 30 * time.Second}, {1, 30 * time.Second}, {2, 60 * time.Second}, {3, 90 * time.Second},
		{10, 300 * time.Second}, {11, 300 * time.Second}, {1 << 40, 300 * time.Second},
	} {
		if got := c.EjectionTime(tc.n); got != tc.want {
			t.Errorf("EjectionTime(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
	odd := Config{BaseEjectionTime: 7 * time.Second, MaxEjectionTime: 20 * time.Second}
	for n, want := range map[int]time.Duration{1: 7 * time.Second, 2: 14 * time.Second, 3: 20 * time.Second, 4: 20 * time.Second} {
		if got := odd.EjectionTime(n); got != want {
			t.Errorf("7s/20s: EjectionTime(%d) = %v, want %v", n, got, want)
		}
	}
}

func TestMaxEjectedAndMayEject(t *testing.T) {
	for _, tc := range []struct {
		total, percent, want int
	}{
		{0, 10, 0},
		{1, 10, 1}, {2, 10, 1}, {3, 10, 1}, {10, 10, 1}, {19, 10, 1}, {20, 10, 2},
		{1, 50, 1}, {2, 50, 1}, {3, 50, 1}, {4, 50, 2}, {10, 50, 5},
		{1, 100, 1}, {2, 100, 2}, {3, 100, 3}, {10, 100, 10},
		{3, 0, 1}, {10, 0, 1},
		{4, 75, 3}, {4, 74, 2},
	} {
		if got := MaxEjected(tc.total, tc.percent); got != tc.want {
			t.Errorf("MaxEjected(%d, %d%%) = %d, want %d", tc.total, tc.percent, got, tc.want)
		}
		c := Config{MaxEjectionPercent: tc.percent}
		for ejected := 0; ejected <= tc.total; ejected++ {
			if got, want := c.MayEject(tc.total, ejected), ejected < tc.want; got != want {
				t.Errorf("MayEject(total %d, ejected %d, %d%%) = %v, want %v", tc.total, ejected, tc.percent, got, want)
			}
		}
	}
}

func TestFailureRateExceeded(t *testing.T) {
	c := Config{FailurePercentage: 50, MinimumRequests: 10}
	for _, tc := range []struct {
		name                string
		c                   Config
		successes, failures uint64
		want                bool
	}{
		{"below minimum requests", c, 0, 9, false},
		{"at minimum, all failed", c, 0, 10, true},
		{"exactly the percentage is not over it", c, 5, 5, false},
		{"just over", c, 49, 51, true},
		{"no traffic", c, 0, 0, false},
		{"rule off", Config{MinimumRequests: 1}, 0, 100, false},
		{"90% failing at 80", Config{FailurePercentage: 80, MinimumRequests: 50}, 10, 90, true},
		{"70% failing at 80", Config{FailurePercentage: 80, MinimumRequests: 50}, 30, 70, false},
		{"100 needs all to fail... and more", Config{FailurePercentage: 100, MinimumRequests: 1}, 0, 50, false},
		{"1% with one failure in 50", Config{FailurePercentage: 1, MinimumRequests: 50}, 49, 1, true},
	} {
		if got := tc.c.FailureRateExceeded(tc.successes, tc.failures); got != tc.want {
			t.Errorf("%s: FailureRateExceeded(%d ok, %d failed) = %v, want %v", tc.name, tc.successes, tc.failures, got, tc.want)
		}
	}
}

// TestStateMultiplier follows one endpoint through ejections, expiries
// and quiet intervals.
func TestStateMultiplier(t *testing.T) {
	c := Config{BaseEjectionTime: time.Second, MaxEjectionTime: 3 * time.Second}
	t0 := time.Unix(1000, 0)
	type step struct {
		do           string // eject, end, review-ok, review-failed
		at           time.Duration
		wantEjected  bool
		wantMult     int
		wantDuration time.Duration // of the ejection, after eject
	}
	steps := []step{
		{"eject", 0, true, 1, time.Second},
		{"review-ok", 500 * time.Millisecond, true, 1, 0}, // ejected: no step down
		{"end", time.Second, false, 1, 0},
		{"eject", 2 * time.Second, true, 2, 2 * time.Second},
		{"end", 4 * time.Second, false, 2, 0},
		{"review-failed", 5 * time.Second, false, 2, 0},
		{"eject", 6 * time.Second, true, 3, 3 * time.Second},
		{"end", 9 * time.Second, false, 3, 0},
		{"eject", 10 * time.Second, true, 4, 3 * time.Second}, // capped
		{"end", 13 * time.Second, false, 4, 0},
		{"review-ok", 14 * time.Second, false, 3, 0},
		{"review-ok", 15 * time.Second, false, 2, 0},
		{"review-ok", 16 * time.Second, false, 1, 0},
		{"review-ok", 17 * time.Second, false, 0, 0},
		{"review-ok", 18 * time.Second, false, 0, 0},
		{"eject", 19 * time.Second, true, 1, time.Second},
	}
	var s State
	for i, st := range steps {
		now := t0.Add(st.at)
		switch st.do {
		case "eject":
			s = s.Eject(c, now, RuleConsecutive, "UNAVAILABLE", 5)
			if d := s.Until.Sub(s.Since); d != st.wantDuration {
				t.Errorf("step %d: ejection of %v, want %v", i, d, st.wantDuration)
			}
			if s.Expired(now) || s.Expired(s.Until.Add(-time.Nanosecond)) || !s.Expired(s.Until) {
				t.Errorf("step %d: Expired wrong around %v", i, s.Until)
			}
		case "end":
			s = s.End()
		case "review-ok":
			s = s.Review(0)
		case "review-failed":
			s = s.Review(3)
		}
		if s.Ejected != st.wantEjected || s.Multiplier != st.wantMult {
			t.Errorf("step %d (%s): ejected %v multiplier %d, want %v %d", i, st.do, s.Ejected, s.Multiplier, st.wantEjected, st.wantMult)
		}
	}
}

func TestProblems(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"negative consecutive", func(c *Config) { c.ConsecutiveFailures = -1 }, "consecutive_failures"},
		{"tiny interval", func(c *Config) { c.Interval = time.Millisecond }, "interval"},
		{"tiny base", func(c *Config) { c.BaseEjectionTime = 0 }, "base_ejection_time"},
		{"max below base", func(c *Config) { c.MaxEjectionTime = time.Second }, "max_ejection_time"},
		{"percent over 100", func(c *Config) { c.MaxEjectionPercent = 101 }, "max_ejection_percent"},
		{"failure percentage over 100", func(c *Config) { c.FailurePercentage = 200 }, "failure_percentage"},
		{"no minimum", func(c *Config) { c.MinimumRequests = 0 }, "minimum_requests"},
		{"both rules off", func(c *Config) { c.ConsecutiveFailures = 0 }, "consecutive_failures"},
	} {
		c := DefaultConfig()
		tc.edit(&c)
		ps := c.Problems()
		if len(ps) != 1 || ps[0].Field != tc.field {
			t.Errorf("%s: problems %v, want one about %s", tc.name, ps, tc.field)
		}
	}
}
