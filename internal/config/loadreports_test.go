package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/balancer/wrr"
)

func TestParseLoadReports(t *testing.T) {
	cfg, err := Parse("t.yaml", trafficConfig(`    lb_policy: weighted_round_robin
    load_reports:
      period: 1s
      blackout: 0s
      expiration: 30s
      error_penalty: 0.5
  - name: d
    endpoints: [{address: 127.0.0.1:2}]
    lb_policy: weighted_round_robin
  - name: e
    endpoints: [{address: 127.0.0.1:3}]
    load_reports: {period: 2s}
    lb_policy: weighted_round_robin
  - name: f
    endpoints: [{address: 127.0.0.1:4}]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := wrr.Config{Period: time.Second, Expiration: 30 * time.Second, ErrorPenalty: 0.5}
	if c := cfg.Clusters[0]; c.LBPolicy != WeightedRoundRobin || c.LoadReports == nil || *c.LoadReports != want {
		t.Fatalf("cluster c: %s, load_reports %+v", c.LBPolicy, c.LoadReports)
	}
	if c := cfg.Clusters[1]; c.LoadReports == nil || *c.LoadReports != wrr.DefaultConfig() {
		t.Fatalf("cluster d: defaults wanted, got %+v", c.LoadReports)
	}
	want = wrr.DefaultConfig()
	want.Period = 2 * time.Second
	if c := cfg.Clusters[2]; c.LoadReports == nil || *c.LoadReports != want {
		t.Fatalf("cluster e: %+v, want %+v", c.LoadReports, want)
	}
	if c := cfg.Clusters[3]; c.LoadReports != nil {
		t.Fatalf("round_robin: no load_reports wanted, got %+v", c.LoadReports)
	}
}

func TestParseLoadReportsErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		yaml string
		want []string
	}{
		{"types", `    lb_policy: weighted_round_robin
    load_reports:
      period: 5
      blackout: soon
      expiration: 1m
      error_penalty: high
      perod: 1s
`, []string{
			`10:15: clusters[0].load_reports.period: invalid duration "5": a duration needs a unit`,
			`11:17: clusters[0].load_reports.blackout: invalid duration "soon"`,
			`13:22: clusters[0].load_reports.error_penalty: must be a number, not`,
			`14:7: clusters[0].load_reports.perod: unknown field "perod"; did you mean "period"?`,
		}},
		{"ranges", `    lb_policy: weighted_round_robin
    load_reports:
      period: 10ms
      expiration: 0s
      error_penalty: -1
`, []string{
			`10:15: clusters[0].load_reports.period: must be at least 100ms, not 10ms`,
			`11:19: clusters[0].load_reports.expiration: must be positive, not 0s`,
			`12:22: clusters[0].load_reports.error_penalty: must be a number from 0 up, not -1`,
		}},
		{"other policy", `    lb_policy: least_request
    load_reports: {period: 1s}
`, []string{
			`9:19: clusters[0].load_reports: only for lb_policy weighted_round_robin, not least_request`,
		}},
		{"default policy", `    load_reports: {period: 1s}
`, []string{
			`8:19: clusters[0].load_reports: only for lb_policy weighted_round_robin (the default is round_robin)`,
		}},
		{"unknown policy", `    lb_policy: weighted
`, []string{
			`8:16: clusters[0].lb_policy: must be one of round_robin, least_request, random, ring_hash, maglev, weighted_round_robin`,
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", trafficConfig(tt.yaml))
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("err = %v, want an ErrorList", err)
			}
			var got []string
			for _, e := range list {
				got = append(got, strings.TrimPrefix(e.Error(), "t.yaml:"))
			}
			if len(got) != len(tt.want) {
				t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("error %d:\n got %s\nwant %s", i, got[i], tt.want[i])
				}
			}
		})
	}
}
