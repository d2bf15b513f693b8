package discovery

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/internal/dnstest"
	"github.com/vigil-proxy/vigil/internal/kubetest"
)

// cpuTime is the process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// srvRecords is one SRV name with 100 targets of 100 addresses each:
// 10,000 endpoints (no single DNS answer holds 10,000 SRV records; one
// holds 100 easily, and one target's 100 A records fit in UDP).
func srvRecords(change int) []string {
	var records []string
	for t := range 100 {
		target := fmt.Sprintf("t%d", t)
		records = append(records, dnstest.SRV("_grpc._tcp.big", 30, 0, 1, 50051, dnstest.Name(target)))
		for a := range 100 {
			last := a + 1
			if t == 0 && a == 0 {
				last += change // the one address a change moves
			}
			records = append(records, dnstest.A(target, 30, fmt.Sprintf("127.%d.%d.%d", 10+t/200, t%200, last)))
		}
	}
	return records
}

// BenchmarkSRVLookup10000 is the cost of one refresh of an SRV name with
// 10,000 endpoints behind it: the SRV query, 200 target queries (A and
// AAAA), building and comparing the set. The time from a change at the DNS
// server to its Updated event is at most refresh plus this.
func BenchmarkSRVLookup10000(b *testing.B) {
	srv := dnstest.Start(b, srvRecords(0)...)
	src, err := newDNSSource(Spec{Kind: KindSRV, Name: dnstest.Name("_grpc._tcp.big"), Refresh: time.Second, Resolver: srv.Addr})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var tr tracker
	cpu0 := cpuTime(b)
	for b.Loop() {
		set, _, err := src.lookup(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(set) != 10000 {
			b.Fatalf("%d endpoints", len(set))
		}
		tr.observe(set, nil)
	}
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N)/1e6, "cpu-ms/refresh")
}

// BenchmarkKubernetesChange10000: 100 EndpointSlices of 100 endpoints; each
// op changes one endpoint of one slice through the API server and waits for
// the Watcher's Updated event. Then the CPU the Watcher uses in 10 s while
// nothing changes.
func BenchmarkKubernetesChange10000(b *testing.B) {
	c := kubetest.Shared(b)
	ns := c.Namespace(b)
	c.GrantEndpointSlices(b, ns, kubetest.VigilUser)
	kubeconfig := c.WriteKubeconfig(b, b.TempDir(), kubetest.VigilUser)
	// slice writes slice i; change > 0 moves its first endpoint to an
	// address no other change used.
	slice := func(i, change int) {
		var eps []kubetest.Endpoint
		for j := range 100 {
			ip := kubetest.IP4(i*100 + j)
			if j == 0 && change > 0 {
				ip = kubetest.IP4(20000 + change)
			}
			eps = append(eps, kubetest.Ready(ip))
		}
		c.Apply(b, kubetest.Slice(ns, fmt.Sprintf("big-%03d", i), "big", grpcPort, eps...))
	}
	for i := range 100 {
		slice(i, 0)
	}
	updates := make(chan int, 100)
	w := Start(kubeSpec(kubeconfig, ns, "big"), func(ev Event) {
		if ev.Kind == Updated {
			updates <- len(ev.Endpoints)
		}
	})
	defer w.Stop()
	if n := <-updates; n != 10000 {
		b.Fatalf("first set: %d endpoints", n)
	}
	var worst time.Duration
	variant := 0
	for b.Loop() {
		variant++
		start := time.Now()
		slice(variant%100, variant)
		select {
		case <-updates:
		case <-time.After(30 * time.Second):
			b.Fatal("no update within 30s")
		}
		worst = max(worst, time.Since(start))
	}
	b.ReportMetric(float64(worst.Microseconds())/1000, "max-ms/change")
	b.StopTimer()
	cpu0 := cpuTime(b)
	time.Sleep(10 * time.Second)
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(10*time.Second)*100, "idle-cpu-%")
}
