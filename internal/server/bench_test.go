package server

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/config"
)

// bigConfig is one cluster of n endpoints that are never probed (mode
// none): each is admitted as soon as it is added, so starting it measures
// the wiring alone (store writes, picker rebuilds), not the network.
func bigConfig(n int) string {
	var b strings.Builder
	b.WriteString("admin:\n  address: \"\"\nlisteners:\n  - name: l\n    address: 127.0.0.1:0\n    protocol: tcp\n    cluster: c\n")
	b.WriteString("clusters:\n  - name: c\n    endpoints:\n")
	for i := range n {
		fmt.Fprintf(&b, "      - address: 10.%d.%d.%d:80\n", i>>16&255, i>>8&255, i&255)
	}
	b.WriteString("    health_check:\n      mode: none\n")
	return b.String()
}

// BenchmarkStartCluster is the time from Start to every endpoint of one
// cluster routable.
func BenchmarkStartCluster(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			cfg := parse(&testing.T{}, bigConfig(n))
			for b.Loop() {
				s := newServer(&testing.T{})
				if err := s.Start(cfg); err != nil {
					b.Fatal(err)
				}
				for len(s.clusters["c"].pool.Cluster().Snapshot().Routable) != n {
					<-s.Ready()
				}
				b.StopTimer()
				if got := healthOf(s, "10.0.0.0:80"); got != checker.Healthy {
					b.Fatalf("health %v", got)
				}
				s.Shutdown(context.Background())
				b.StartTimer()
			}
		})
	}
}

// clustersConfig is n/10 clusters of 10 endpoints (never probed), the last
// endpoint of the first cluster on port last.
func clustersConfig(n, last int) string {
	var b strings.Builder
	b.WriteString("admin:\n  address: \"\"\nclusters:\n")
	for c := range n / 10 {
		fmt.Fprintf(&b, "  - name: c%04d\n    endpoints:\n", c)
		for e := range 10 {
			port := 80 + e
			if c == 0 && e == 9 {
				port = last
			}
			fmt.Fprintf(&b, "      - address: 10.%d.%d.1:%d\n", c>>8, c&255, port)
		}
		b.WriteString("    health_check:\n      mode: none\n")
	}
	return b.String()
}

// BenchmarkReloadApply is the plan and apply of a configuration in which one
// endpoint changed, at 100, 1,000 and 10,000 endpoints: the work must
// follow the change, not the size (parsing is BenchmarkParserReload in
// internal/config).
func BenchmarkReloadApply(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			cfgs := [2]*config.Config{parse(&testing.T{}, clustersConfig(n, 89)), parse(&testing.T{}, clustersConfig(n, 90))}
			s := newServer(&testing.T{})
			if err := s.Start(cfgs[0]); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Shutdown(context.Background()) })
			<-s.Ready() // the start-up's work done: time the reloads alone
			i := 0
			for b.Loop() {
				i++
				next := cfgs[i%2]
				plan, err := s.apply(next, true)
				if err != nil {
					b.Fatal(err)
				}
				if plan.clustersChanged != 1 || plan.endpointsAdded != 1 || plan.endpointsRemoved != 1 {
					b.Fatalf("plan %+v", plan)
				}
			}
		})
	}
}
