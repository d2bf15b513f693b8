package server

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/vigil-proxy/vigil/checker"
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
				for len(s.clusters["c"].bal.Snapshot().Routable) != n {
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
