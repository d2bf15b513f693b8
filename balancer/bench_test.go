package balancer_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/vigil-proxy/vigil/balancer"
)

// benchCluster returns a cluster of n healthy members with mixed weights
// under policy.
func benchCluster(b *testing.B, policy string, n int) *balancer.Cluster {
	ms := make([]balancer.Member, n)
	r := rand.New(rand.NewPCG(uint64(n), 42))
	for i := range ms {
		ms[i] = balancer.Member{
			Endpoint: balancer.NewEndpoint(fmt.Sprintf("ep%d", i)),
			Weight:   1 + r.Uint32N(10000),
			Healthy:  true,
		}
	}
	c := balancer.NewCluster("bench")
	c.Update(mustPolicy(b, policy), 50, ms)
	return c
}

// BenchmarkClusterPick measures a pick through the cluster's atomic
// snapshot pointer: what the data path pays per connection or RPC.
func BenchmarkClusterPick(b *testing.B) {
	for _, policy := range shippedPolicies {
		for _, n := range []int{3, 1000} {
			b.Run(fmt.Sprintf("%s/%d", policy, n), func(b *testing.B) {
				c := benchCluster(b, policy, n)
				b.ReportAllocs()
				var sink *balancer.Endpoint
				for b.Loop() {
					sink = c.Pick()
				}
				if sink == nil {
					b.Fatal("Pick returned nil")
				}
			})
		}
	}
}

// BenchmarkClusterPickParallel is BenchmarkClusterPick from GOMAXPROCS
// goroutines, each acquiring and releasing its endpoint as the data path
// does.
func BenchmarkClusterPickParallel(b *testing.B) {
	for _, policy := range shippedPolicies {
		for _, n := range []int{3, 1000} {
			b.Run(fmt.Sprintf("%s/%d", policy, n), func(b *testing.B) {
				c := benchCluster(b, policy, n)
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						e := c.Pick()
						e.Acquire()
						e.Release()
					}
				})
			})
		}
	}
}

// BenchmarkClusterUpdate measures a rebuild: what a health change costs.
func BenchmarkClusterUpdate(b *testing.B) {
	for _, policy := range shippedPolicies {
		for _, n := range []int{3, 1000, 10000} {
			b.Run(fmt.Sprintf("%s/%d", policy, n), func(b *testing.B) {
				c := benchCluster(b, policy, n)
				ms := make([]balancer.Member, 0, n)
				for _, w := range c.Snapshot().Routable {
					ms = append(ms, balancer.Member{Endpoint: w.Endpoint, Weight: w.Weight, Healthy: true})
				}
				p := mustPolicy(b, policy)
				b.ReportAllocs()
				for b.Loop() {
					c.Update(p, 50, ms)
				}
			})
		}
	}
}
