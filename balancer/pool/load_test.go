package pool

import (
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/balancer/roundrobin"
	"github.com/vigil-proxy/vigil/balancer/wrr"
	"github.com/vigil-proxy/vigil/checker"
)

// Ports 1-3 on loopback refuse: the load-report streams the pool asks the
// checker for find nothing there, and the tests feed reports themselves.
const la, lb, lc = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"

func loadSpec(cfg wrr.Config) Spec {
	return Spec{Policy: wrr.Policy{}, LoadReports: &cfg}
}

var testLoadConfig = wrr.Config{Period: time.Second, Blackout: 10 * time.Second, Expiration: time.Minute, ErrorPenalty: 1}

// report feeds addr's report of utilization at qps 100 now.
func (r *rampPool) report(addr string, utilization float64) {
	r.loadReport(addr, checker.LoadReport{ApplicationUtilization: utilization, QPS: 100})
}

func (r *rampPool) wantWeights(step string, want map[string]uint32) {
	r.t.Helper()
	r.build()
	got := r.weights()
	if len(got) != len(want) {
		r.t.Fatalf("%s: picker weights %v, want %v", step, got, want)
	}
	for a, w := range want {
		if got[a] != w {
			r.t.Fatalf("%s: picker weights %v, want %v", step, got, want)
		}
	}
	// Round robin is exact over whole cycles (a cycle divides
	// len x Σw picks): the picks follow the weights.
	sum := 0
	for _, w := range got {
		sum += int(w)
	}
	n := len(got) * sum
	counts := picks(r.Pool, n)
	for a, w := range got {
		if counts[a] != len(got)*int(w) {
			r.t.Fatalf("%s: %d of %d picks to %s, want %d", step, counts[a], n, a, len(got)*int(w))
		}
	}
}

var equal = map[string]uint32{la: wrr.MaxPickerWeight, lb: wrr.MaxPickerWeight, lc: wrr.MaxPickerWeight}

func TestLoadWeights(t *testing.T) {
	r := newRampPool(t, loadSpec(testLoadConfig), la, lb, lc)
	r.wantWeights("no report", equal)

	r.report(la, 0.2)
	r.report(lb, 0.5)
	r.report(lc, 0.8)
	r.wantWeights("blackout", equal)

	r.clk.advance(10 * time.Second)
	r.report(la, 0.2)
	// 100/0.2 = 500, 100/0.5 = 200, 100/0.8 = 125: scaled to 10,000.
	r.wantWeights("after the blackout", map[string]uint32{la: 10000, lb: 4000, lc: 2500})
	if w, _ := r.EffectiveWeight(la); w != 500 {
		t.Errorf("effective weight of %s = %v, want 500 (qps/utilization)", la, w)
	}
	ls, ok := r.LoadState(lc)
	if !ok || ls.Report.ApplicationUtilization != 0.8 || ls.Weight != 125 || ls.At.IsZero() {
		t.Errorf("LoadState(%s) = %+v, %v", lc, ls, ok)
	}

	// c's utilization rises: its share falls at the next build.
	r.report(lc, 2.0)
	r.wantWeights("c loaded", map[string]uint32{la: 10000, lb: 4000, lc: 1000})

	// A report without utilization is ignored: the weight stays.
	r.loadReport(lc, checker.LoadReport{QPS: 100})
	r.wantWeights("zero utilization ignored", map[string]uint32{la: 10000, lb: 4000, lc: 1000})

	// a and b stop reporting: expired a minute after their last report,
	// while c reports on; one weighted endpoint is round robin.
	r.clk.advance(55 * time.Second)
	r.report(lc, 2.0)
	r.clk.advance(5 * time.Second)
	r.wantWeights("a and b expired", equal)
}

func TestLoadWeightsMean(t *testing.T) {
	r := newRampPool(t, loadSpec(wrr.Config{Period: time.Second, Expiration: time.Minute, ErrorPenalty: 1}), la, lb, lc)
	r.report(la, 0.25) // 400
	r.wantWeights("one weighted", equal)
	r.report(lb, 0.5) // 200
	// c has no report: the mean, 300.
	r.wantWeights("c by the mean", map[string]uint32{la: 10000, lb: 5000, lc: 7500})
	if w, _ := r.EffectiveWeight(lc); w != 300 {
		t.Errorf("effective weight of %s = %v, want the mean 300", lc, w)
	}
}

// TestLoadWeightsHealth: health decides who is in the picker; the
// reports only weigh the healthy ones, and a readmitted endpoint is
// weighed by the mean until its blackout is over again.
func TestLoadWeightsHealth(t *testing.T) {
	r := newRampPool(t, loadSpec(testLoadConfig), la, lb, lc)
	for _, a := range []string{la, lb, lc} {
		r.report(a, 0.5)
	}
	r.clk.advance(10 * time.Second)
	r.report(la, 0.25) // 400; b and c 200
	r.wantWeights("all weighted", map[string]uint32{la: 10000, lb: 5000, lc: 5000})

	r.setHealth(lb, refused)
	r.report(lb, 0.1) // an evicted endpoint's reports weigh nothing
	r.wantWeights("b evicted", map[string]uint32{la: 10000, lc: 5000})

	r.setHealth(lb, healthy)
	r.report(lb, 0.1)
	// Readmitted: blackout again, so b gets the mean of a and c (300).
	r.wantWeights("b readmitted", map[string]uint32{la: 10000, lb: 7500, lc: 5000})
	r.clk.advance(10 * time.Second)
	r.report(lb, 0.1) // 1000
	r.report(la, 0.25)
	r.report(lc, 0.5)
	r.wantWeights("b's blackout over", map[string]uint32{la: 4000, lb: 10000, lc: 2000})
}

// TestLoadWeightsReportBeforeAdmission: a report that comes before the
// endpoint's first admission (the load stream opens with the probe
// connection, and may beat the first health answer) weighs it from its
// admission on; only a readmission waits for reports after it.
func TestLoadWeightsReportBeforeAdmission(t *testing.T) {
	r := newRampPool(t, loadSpec(wrr.Config{Period: time.Second, Expiration: time.Minute, ErrorPenalty: 1}), la, lb)
	pending := checker.Status{Health: checker.Pending}
	r.setHealth(la, pending)
	r.setHealth(lb, pending)
	r.report(la, 0.2) // 500
	r.report(lb, 0.5) // 200
	r.setHealth(la, healthy)
	r.setHealth(lb, healthy)
	r.wantWeights("admitted after its reports", map[string]uint32{la: 10000, lb: 4000})

	r.setHealth(lb, refused)
	r.report(lb, 0.1)
	r.setHealth(lb, healthy)
	r.wantWeights("b readmitted, no report since", equal2)
	r.report(lb, 0.1) // 1000
	r.wantWeights("b reported after its return", map[string]uint32{la: 5000, lb: 10000})
}

var equal2 = map[string]uint32{la: wrr.MaxPickerWeight, lb: wrr.MaxPickerWeight}

// TestLoadWeightsPolicySwitch: leaving weighted_round_robin goes back to
// the configured weights and forgets the reports; coming back weighs on
// fresh ones, after a blackout.
func TestLoadWeightsPolicySwitch(t *testing.T) {
	cfg := wrr.Config{Period: time.Second, Expiration: time.Minute, ErrorPenalty: 1}
	r := newRampPool(t, loadSpec(cfg), la, lb)
	r.report(la, 0.25)
	r.report(lb, 0.5)
	r.wantWeights("weighted", map[string]uint32{la: 10000, lb: 5000})

	plan := r.Apply(Spec{Policy: roundrobin.Policy{}, HealthCheck: none(), Endpoints: endpoints(la, lb)})
	if !plan.PolicyChanged || !plan.LoadReportsChanged {
		t.Fatalf("plan %+v: want the policy and load reports changed", plan)
	}
	r.wantWeights("round_robin", map[string]uint32{la: 1, lb: 1})
	if _, ok := r.LoadState(la); ok {
		t.Errorf("LoadState under round_robin: want none")
	}
	r.report(la, 0.25) // not weighed: not the policy
	plan = r.Apply(Spec{Policy: wrr.Policy{}, LoadReports: &cfg, HealthCheck: none(), Endpoints: endpoints(la, lb)})
	if !plan.LoadReportsChanged || len(plan.Added)+len(plan.Removed) != 0 {
		t.Fatalf("plan %+v: want load reports changed, no endpoint added or removed", plan)
	}
	r.wantWeights("back, no report yet", map[string]uint32{la: wrr.MaxPickerWeight, lb: wrr.MaxPickerWeight})

	changed := cfg
	changed.Blackout = time.Second
	if plan := r.Apply(Spec{Policy: wrr.Policy{}, LoadReports: &changed, HealthCheck: none(), Endpoints: endpoints(la, lb)}); !plan.LoadReportsChanged || plan.PolicyChanged {
		t.Fatalf("plan %+v: want only load reports changed", plan)
	}
}
