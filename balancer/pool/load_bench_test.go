package pool

import (
	"fmt"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/balancer/wrr"
	"github.com/vigil-proxy/vigil/checker"
)

// BenchmarkLoadReport is the pool's share of one load report: finding
// the member and updating its weight state under the pool's lock.
func BenchmarkLoadReport(b *testing.B) {
	addrs := benchAddrs(1000)
	r := newRampPool(b, loadSpec(wrr.Config{Period: time.Second, Expiration: time.Minute, ErrorPenalty: 1}), addrs...)
	r.group.SetLoadReports(0) // the benchmark makes the reports
	lr := checker.LoadReport{ApplicationUtilization: 0.5, QPS: 100}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.loadReport(addrs[i%len(addrs)], lr)
		i++
	}
}

// BenchmarkLoadRebuild is what the weigh goroutine pays every second for
// a weighted_round_robin cluster: weigh every member by its reports and
// build the picker, with every endpoint weighted (their weights differ,
// so every tick rebuilds).
func BenchmarkLoadRebuild(b *testing.B) {
	for _, n := range []int{3, 100, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			addrs := benchAddrs(n)
			r := newRampPool(b, loadSpec(wrr.Config{Period: time.Second, Expiration: time.Hour, ErrorPenalty: 1}), addrs...)
			r.group.SetLoadReports(0) // the benchmark makes the reports
			u := 0.1
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				for _, a := range addrs {
					u = u*1.1 + 0.01
					if u > 1 {
						u -= 0.9
					}
					r.loadReport(a, checker.LoadReport{ApplicationUtilization: u, QPS: 100})
				}
				b.StartTimer()
				r.mu.Lock()
				r.buildLocked()
				r.mu.Unlock()
			}
		})
	}
}

func benchAddrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.1.%d.%d:1", i/250, 1+i%250)
	}
	return out
}
