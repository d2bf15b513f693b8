package config

import (
	"fmt"
	"strings"
	"testing"
)

// bigConfig is a configuration of n clusters of m endpoints each, with a
// listener per cluster; shift moves the last endpoint of the last cluster.
func bigConfig(n, m int, shift bool) []byte {
	var b strings.Builder
	b.WriteString("listeners:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - name: l%d\n    address: 127.0.0.1:%d\n    cluster: c%d\n", i, 20000+i, i)
	}
	b.WriteString("clusters:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - name: c%d\n    lb_policy: round_robin\n    endpoints:\n", i)
		for j := range m {
			port := 30000 + j
			if shift && i == n-1 && j == m-1 {
				port = 40000
			}
			fmt.Fprintf(&b, "      - address: 10.%d.%d.1:%d\n        weight: %d\n", i/256, i%256, port, 1+j%3)
		}
		b.WriteString("    health_check:\n      mode: check\n      interval: 5s\n      timeout: 1s\n      jitter: 10%\n")
	}
	return []byte(b.String())
}

func TestBigConfig(t *testing.T) {
	// Small enough to stay fast under -race; the benchmarks use 1,000.
	old := mustParse(t, string(bigConfig(300, 10, false)))
	new := mustParse(t, string(bigConfig(300, 10, true)))
	if len(old.Clusters) != 300 || len(new.Clusters[299].Endpoints) != 10 || new.Clusters[299].Endpoints[9].Address != "10.1.43.1:40000" {
		t.Errorf("bigConfig parsed as %d clusters, the last one %+v", len(old.Clusters), new.Clusters[299].Endpoints)
	}
}

func mustParse(t testing.TB, data string) *Config {
	t.Helper()
	cfg, err := Parse("t.yaml", []byte(data))
	if err != nil {
		t.Fatalf("%v\nin:\n%s", err, data)
	}
	return cfg
}

// BenchmarkParseBig parses 1,000 clusters × 10 endpoints (and 1,000 listeners).
func BenchmarkParseBig(b *testing.B) {
	data := bigConfig(1000, 10, false)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("big.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}
