package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/balancer/slowstart"
)

func TestParseSlowStart(t *testing.T) {
	cfg, err := Parse("t.yaml", trafficConfig(`    slow_start:
      window: 1m
      aggression: 2.5
      min_weight_percent: 0
  - name: d
    endpoints: [{address: 127.0.0.1:2}]
    slow_start:
  - name: e
    endpoints: [{address: 127.0.0.1:3}]
    slow_start: {aggression: 1}
  - name: f
    endpoints: [{address: 127.0.0.1:4}]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := slowstart.Config{Window: time.Minute, Aggression: 2.5, MinWeightPercent: 0}
	if c := cfg.Clusters[0]; c.SlowStart == nil || *c.SlowStart != want {
		t.Fatalf("cluster c: slow_start %+v", c.SlowStart)
	}
	for _, i := range []int{1, 2} {
		if c := cfg.Clusters[i]; c.SlowStart == nil || *c.SlowStart != slowstart.DefaultConfig() {
			t.Fatalf("cluster %s: defaults wanted, got %+v", c.Name, c.SlowStart)
		}
	}
	if c := cfg.Clusters[3]; c.SlowStart != nil {
		t.Fatalf("absent section: off wanted, got %+v", c.SlowStart)
	}
}

func TestParseSlowStartErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		yaml string
		want []string
	}{
		{"types", `    slow_start:
      window: 5
      aggression: fast
      min_weight_percent: 1.5
      windw: 1s
`, []string{
			`9:15: clusters[0].slow_start.window: invalid duration "5": a duration needs a unit`,
			`10:19: clusters[0].slow_start.aggression: must be a number, not`,
			`11:27: clusters[0].slow_start.min_weight_percent: must be an integer`,
			`12:7: clusters[0].slow_start.windw: unknown field "windw"; did you mean "window"?`,
		}},
		{"ranges", `    slow_start:
      window: 0s
      aggression: 0
      min_weight_percent: 101
`, []string{
			`9:15: clusters[0].slow_start.window: must be positive, not 0s`,
			`10:19: clusters[0].slow_start.aggression: must be a positive number, not 0`,
			`11:27: clusters[0].slow_start.min_weight_percent: must be from 0 to 100, not 101`,
		}},
		{"negative and infinite", `    slow_start: {window: 10s, aggression: .inf, min_weight_percent: -1}
`, []string{
			`8:43: clusters[0].slow_start.aggression: must be a number, not`,
		}},
		{"negative", `    slow_start: {window: -1s, aggression: -1, min_weight_percent: -1}
`, []string{
			`8:26: clusters[0].slow_start.window: must not be negative, not -1s`,
		}},
		{"negative numbers", `    slow_start: {aggression: -1, min_weight_percent: -1}
`, []string{
			`8:30: clusters[0].slow_start.aggression: must be a positive number, not -1`,
			`8:54: clusters[0].slow_start.min_weight_percent: must be from 0 to 100, not -1`,
		}},
		{"not a mapping", `    slow_start: 30s
`, []string{
			`8:17: clusters[0].slow_start: must be a mapping`,
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
