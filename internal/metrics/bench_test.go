package metrics

import (
	"fmt"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/balancer/tcpproxy"
)

// BenchmarkRPCHooks is the metrics cost of one forwarded RPC.
func BenchmarkRPCHooks(b *testing.B) {
	m := New(Options{})
	g := m.GRPC("api")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g.RPCStarted("orders", "127.0.0.1:50051")
			g.RPCFinished("orders", "", "127.0.0.1:50051", "OK", time.Millisecond)
		}
	})
}

// BenchmarkTCPHooks is the metrics cost of one proxied TCP connection.
func BenchmarkTCPHooks(b *testing.B) {
	m := New(Options{})
	h := m.TCP("raw")
	stats := tcpproxy.ConnStats{Cluster: "db", Endpoint: "127.0.0.1:5432", Outcome: tcpproxy.OutcomeOK,
		BytesToUpstream: 100, BytesToClient: 1000}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.ConnectionOpened("db", "127.0.0.1:5432")
			h.ConnectionClosed(stats)
		}
	})
}

// BenchmarkProbeHook is the metrics cost of one health-check result.
func BenchmarkProbeHook(b *testing.B) {
	m := New(Options{})
	r := ok(time.Millisecond)
	b.ReportAllocs()
	for b.Loop() {
		m.Probe("orders", "127.0.0.1:50051", r)
	}
}

// BenchmarkScrape gathers (with pruning) a store of 100 clusters of 10
// endpoints each.
func BenchmarkScrape(b *testing.B) {
	s := newTestStore(b)
	m := New(Options{Store: s.Store})
	for c := range 100 {
		name := fmt.Sprintf("cluster-%d", c)
		addrs := make([]string, 10)
		for e := range addrs {
			addrs[e] = fmt.Sprintf("10.0.%d.%d:50051", c, e)
			m.Probe(name, addrs[e], ok(time.Millisecond))
		}
		s.addCluster(name, addrs...)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
