package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/balancer/outlier"
)

// trafficConfig is a file with one cluster with one endpoint whose body
// continues with cluster.
func trafficConfig(cluster string) []byte {
	return discoveryConfig("    endpoints: [{address: 127.0.0.1:1}]\n" + cluster)
}

func TestParseOutlier(t *testing.T) {
	cfg, err := Parse("t.yaml", trafficConfig(`    outlier_detection:
      consecutive_failures: 3
      interval: 1s
      base_ejection_time: 2s
      max_ejection_time: 10s
      max_ejection_percent: 50
      failure_percentage: 80
      minimum_requests: 20
  - name: d
    endpoints: [{address: 127.0.0.1:2}]
    outlier_detection:
  - name: e
    endpoints: [{address: 127.0.0.1:3}]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := outlier.Config{ConsecutiveFailures: 3, Interval: time.Second, BaseEjectionTime: 2 * time.Second,
		MaxEjectionTime: 10 * time.Second, MaxEjectionPercent: 50, FailurePercentage: 80, MinimumRequests: 20}
	if c := cfg.Clusters[0]; c.Outlier == nil || *c.Outlier != want {
		t.Fatalf("cluster c: outlier %+v", c.Outlier)
	}
	if c := cfg.Clusters[1]; c.Outlier == nil || *c.Outlier != outlier.DefaultConfig() {
		t.Fatalf("empty section: defaults wanted, got %+v", c.Outlier)
	}
	if c := cfg.Clusters[2]; c.Outlier != nil {
		t.Fatalf("absent section: off wanted, got %+v", c.Outlier)
	}
}

func TestParseOutlierErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		yaml string
		want []string
	}{
		{"values", `    outlier_detection:
      consecutive_failures: -1
      interval: 5
      max_ejection_percent: 101
      failure_percentage: x
      minimum_requests: 0
      base_ejection_tme: 1s
`, []string{
			`9:29: clusters[0].outlier_detection.consecutive_failures: must be at least 0, not -1`,
			`10:17: clusters[0].outlier_detection.interval: invalid duration "5": a duration needs a unit`,
			`11:29: clusters[0].outlier_detection.max_ejection_percent: must be from 0 to 100, not 101`,
			`12:27: clusters[0].outlier_detection.failure_percentage: must be an integer, not`,
			`13:25: clusters[0].outlier_detection.minimum_requests: must be at least 1, not 0`,
			`14:7: clusters[0].outlier_detection.base_ejection_tme: unknown field "base_ejection_tme"; did you mean "base_ejection_time"?`,
		}},
		{"rules", `    outlier_detection: {base_ejection_time: 10s, max_ejection_time: 5s, consecutive_failures: 0}
`, []string{
			`8:69: clusters[0].outlier_detection.max_ejection_time: must be at least base_ejection_time (10s), not 5s`,
			`8:95: clusters[0].outlier_detection.consecutive_failures: and failure_percentage are both 0`,
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
