package integration

import (
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/internal/dnstest"
	"github.com/vigil-proxy/vigil/internal/kubetest"
)

// Discovery at scale, against the real vigil (built without -race), a real
// unbound or API server, and fleet helpers serving health and TestService
// on 10,000 addresses:
//
//   - BenchmarkDiscoverySRV10000 and BenchmarkDiscoveryKubernetes10000: the
//     time from a change at the source (the zone reloaded; the
//     EndpointSlice written) to the change in vigil's picker (the added
//     endpoint admitted, the removed one removed), and vigil's CPU while
//     nothing changes (an SRV refresh every second costs its lookups; a
//     watch costs nothing).
//   - BenchmarkDiscoveryChurn: 10% of the SRV endpoints (2,000 by default,
//     VIGIL_BENCH_CHURN_SIZE) replaced every 10 s for a minute
//     (VIGIL_BENCH_CHURN) under an RPC loop: no failed call, and goroutines,
//     heap and idle CPU afterwards as before. (An RPC loop makes vigil open
//     a data connection to every endpoint; at 10,000 that is a 1.5 GB heap,
//     which the GOGC=25 the heap measurement needs cannot scrape in time on
//     2 shared cores.)

// srvZone is one SRV name, _grpc._tcp.fleet, for the endpoints addrs: per
// port, the hosts in targets of at most 100 addresses (an SRV answer holds
// a few hundred records at most; 10,000 need targets with many addresses).
func srvZone(addrs []string) []string {
	byPort := map[int][]string{}
	for _, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(port)
		byPort[p] = append(byPort[p], host)
	}
	ports := make([]int, 0, len(byPort))
	for p := range byPort {
		ports = append(ports, p)
	}
	sort.Ints(ports)
	var zone []string
	for _, p := range ports {
		hosts := byPort[p]
		for c := 0; c*100 < len(hosts); c++ {
			target := fmt.Sprintf("p%d-c%d", p, c)
			zone = append(zone, dnstest.SRV("_grpc._tcp.fleet", 30, 0, 1, p, dnstest.Name(target)))
			for _, h := range hosts[c*100 : min((c+1)*100, len(hosts))] {
				zone = append(zone, dnstest.A(target, 30, h))
			}
		}
	}
	return zone
}

// discoveryBenchConfig is one grpc listener in front of one cluster that
// discovers its endpoints, watched (liveness keepalive), admin on.
func discoveryBenchConfig(discovery string) string {
	var b strings.Builder
	b.WriteString("admin:\n  address: 127.0.0.1:0\nlog:\n  format: json\n  level: info\nshutdown:\n  drain_delay: 0s\n  timeout: 2s\n")
	b.WriteString("listeners:\n  - name: api\n    address: 127.0.0.1:0\n    protocol: grpc\n    cluster: fleet\n")
	b.WriteString("clusters:\n  - name: fleet\n    panic_threshold: 0\n    discovery:\n")
	for line := range strings.SplitSeq(strings.TrimSpace(discovery), "\n") {
		fmt.Fprintf(&b, "      %s\n", line)
	}
	b.WriteString("    health_check:\n      mode: watch\n      interval: 5s\n      timeout: 1s\n")
	return b.String()
}

// changeLatency measures rounds of one change each, alternately adding and
// removing endpoint, made by set(with): the time from set's return to the
// record that puts the change in the picker. Each change waits a random
// part of spread first, so that changes fall anywhere in a refresh period
// rather than right after the refresh that saw the last one.
func changeLatency(b *testing.B, v *vigilProc, endpoint string, rounds int, spread time.Duration, set func(with bool)) (add, remove []time.Duration) {
	b.Helper()
	for i := range 2 * rounds {
		with := i%2 == 0
		if spread > 0 {
			time.Sleep(rand.N(spread))
		}
		mark := v.mark()
		set(with)
		t0 := time.Now()
		msg := "endpoint removed"
		if with {
			msg = "endpoint admitted"
		}
		r, _ := v.wait(30*time.Second, mark, match(msg, "endpoint", endpoint), msg+" "+endpoint)
		d := recordTime(b, r).Sub(t0)
		if with {
			add = append(add, d)
		} else {
			remove = append(remove, d)
		}
	}
	return add, remove
}

func reportLatency(b *testing.B, name string, ds []time.Duration) {
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(ds[len(ds)-1].Microseconds())/1000, name+"-max-ms")
}

// idleCPU is vigil's CPU share over window while nothing changes.
func idleCPU(b *testing.B, v *vigilProc, window time.Duration) float64 {
	b.Helper()
	pid := v.cmd.Process.Pid
	cpu0, t0 := procCPU(b, pid), time.Now()
	time.Sleep(window)
	return 100 * (procCPU(b, pid) - cpu0).Seconds() / time.Since(t0).Seconds()
}

func BenchmarkDiscoverySRV10000(b *testing.B) {
	benchSetup(b, "vigil, unbound, 3 fleet helpers")
	dnstest.Require(b)
	reportLoad(b)
	f := startFleet(b, 10000, 0)
	spare := f.addrs[len(f.addrs)-1]
	active := f.addrs[:len(f.addrs)-1]
	srv := dnstest.Start(b, srvZone(active)...)
	v := startVigil(b, discoveryBenchConfig(fmt.Sprintf("srv: %s\nrefresh: 1s\nresolver: %s", dnstest.Name("_grpc._tcp.fleet"), srv.Addr)))
	start := time.Now()
	if _, ok := v.waitAllHealthy(3*time.Minute, len(active)); !ok {
		b.Fatalf("not all %d endpoints healthy; records: %v", len(active), v.tally(0))
	}
	b.ReportMetric(time.Since(start).Seconds(), "admit-s")
	time.Sleep(3 * time.Second)
	b.ReportMetric(idleCPU(b, v, benchDuration(b, "VIGIL_BENCH_STEADY", 20*time.Second)), "idle-cpu-%")

	add, remove := changeLatency(b, v, spare, benchInt(b, "VIGIL_BENCH_DISCOVERY_CHANGES", 10), time.Second, func(with bool) {
		if with {
			srv.Set(srvZone(f.addrs)...)
		} else {
			srv.Set(srvZone(active)...)
		}
	})
	reportLatency(b, "add", add)
	reportLatency(b, "remove", remove)
	b.ReportMetric(0, "ns/op")
}

func BenchmarkDiscoveryKubernetes10000(b *testing.B) {
	benchSetup(b, "vigil, etcd, kube-apiserver, 3 fleet helpers")
	c := kubetest.Shared(b)
	reportLoad(b)
	ns := c.Namespace(b)
	f := startFleetOn(b, "198.18", 10000, 0)
	// 100 slices, each the hosts of one port (a slice has one set of ports).
	byPort := map[int32][]string{}
	for _, a := range f.addrs {
		host, port, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(port)
		byPort[int32(p)] = append(byPort[int32(p)], host)
	}
	spare := f.addrs[len(f.addrs)-1]
	spareHost, sparePortStr, _ := net.SplitHostPort(spare)
	sparePort64, _ := strconv.Atoi(sparePortStr)
	sparePort := int32(sparePort64)
	var spareSlice string
	var spareHosts []string
	n := 0
	for port, hosts := range byPort {
		for ch := 0; ch*100 < len(hosts); ch++ {
			chunk := hosts[ch*100 : min((ch+1)*100, len(hosts))]
			name := fmt.Sprintf("fleet-%d-%d", port, ch)
			if port == sparePort && slices.Contains(chunk, spareHost) {
				spareSlice, spareHosts = name, chunk
				chunk = slices.DeleteFunc(slices.Clone(chunk), func(h string) bool { return h == spareHost })
			}
			var eps []kubetest.Endpoint
			for _, h := range chunk {
				eps = append(eps, kubetest.Ready(h))
			}
			c.Apply(b, kubetest.Slice(ns, name, "fleet", ports(port), eps...))
			n += len(chunk)
		}
	}
	env := c.InCluster(b, ns, "vigil")
	c.GrantEndpointSlices(b, ns, "system:serviceaccount:"+ns+":vigil")
	v := startVigilEnv(b, writeTemp(b, discoveryBenchConfig("kubernetes:\n  service: fleet\n  namespace: "+ns+"\n  port: grpc")), env...)
	start := time.Now()
	if _, ok := v.waitAllHealthy(3*time.Minute, n); !ok {
		b.Fatalf("not all %d endpoints healthy; records: %v", n, v.tally(0))
	}
	b.ReportMetric(time.Since(start).Seconds(), "admit-s")
	time.Sleep(3 * time.Second)
	b.ReportMetric(idleCPU(b, v, benchDuration(b, "VIGIL_BENCH_STEADY", 20*time.Second)), "idle-cpu-%")

	add, remove := changeLatency(b, v, spare, benchInt(b, "VIGIL_BENCH_DISCOVERY_CHANGES", 10), 0, func(with bool) {
		var eps []kubetest.Endpoint
		for _, h := range spareHosts {
			if h != spareHost || with {
				eps = append(eps, kubetest.Ready(h))
			}
		}
		c.Apply(b, kubetest.Slice(ns, spareSlice, "fleet", ports(sparePort), eps...))
	})
	reportLatency(b, "add", add)
	reportLatency(b, "remove", remove)
	b.ReportMetric(0, "ns/op")
}

func BenchmarkDiscoveryChurn(b *testing.B) {
	benchSetup(b, "vigil, unbound, 3 fleet helpers, an RPC loop")
	dnstest.Require(b)
	reportLoad(b)
	size := benchInt(b, "VIGIL_BENCH_CHURN_SIZE", 2000)
	churn := size / 10
	f := startFleet(b, size+churn, 0)
	// The active set is a window of the fleet that moves by churn each
	// round: churn endpoints leave, churn others join.
	window := func(round int) []string {
		out := make([]string, 0, size)
		for i := range size {
			out = append(out, f.addrs[(round*churn+i)%len(f.addrs)])
		}
		return out
	}
	srv := dnstest.Start(b, srvZone(window(0))...)
	v := startVigilEnv(b, writeTemp(b, discoveryBenchConfig(fmt.Sprintf("srv: %s\nrefresh: 1s\nresolver: %s", dnstest.Name("_grpc._tcp.fleet"), srv.Addr))), fmt.Sprintf("GOGC=%d", chaosGOGC))
	if _, ok := v.waitAllHealthy(3*time.Minute, size); !ok {
		b.Fatalf("not all %d endpoints healthy; records: %v", size, v.tally(0))
	}
	base := "http://" + v.adminAddr()
	// A first run of the RPC loop opens vigil's data connection to every
	// endpoint; the baseline is taken with it stopped, as the end is.
	// Round robin reaches every endpoint after size calls: three rounds.
	warm := startRPCLoop(b, v.listener("api"), 4)
	waitUntil(b, 3*time.Minute, func() bool { return warm.ok.Load() >= int64(3*size) }, "the warm-up made %d calls", warm.ok.Load())
	warm.stop()
	if n := warm.errs.Load(); n > 0 {
		b.Fatalf("%d calls failed before the churn: %v", n, warm.err())
	}
	before := chaosBaseline(b, v, base)
	cpuBefore := idleCPU(b, v, 10*time.Second)
	loop := startRPCLoop(b, v.listener("api"), 4)

	rounds := int(benchDuration(b, "VIGIL_BENCH_CHURN", time.Minute) / (10 * time.Second))
	for r := 1; r <= rounds; r++ {
		t0 := time.Now()
		srv.Set(srvZone(window(r))...)
		time.Sleep(time.Until(t0.Add(10 * time.Second)))
	}
	// Settled: the last window all healthy again, the drains over.
	if _, ok := v.waitAllHealthy(time.Minute, size); !ok {
		b.Fatalf("after the churn, not all %d endpoints healthy", size)
	}
	time.Sleep(5 * time.Second)
	loop.stop()
	after := chaosBaseline(b, v, base)
	cpuAfter := idleCPU(b, v, 10*time.Second)
	if n := loop.errs.Load(); n > 0 {
		b.Errorf("%d of %d calls failed during the churn; first: %v", n, n+loop.ok.Load(), loop.err())
	}
	b.Logf("churn: %d rounds of %d of %d endpoints; %d calls, %d failed; records: %v", rounds, churn, size, loop.ok.Load(), loop.errs.Load(), v.tally(0))
	b.Logf("before: %v; after: %v", before, after)
	if after.Goroutines > before.Goroutines+chaosGoroutineSlack {
		b.Errorf("goroutines %d after the churn, %d before", after.Goroutines, before.Goroutines)
	}
	if limit := int64(float64(before.HeapAlloc)*(1+chaosHeapGrowth)) + chaosHeapSlack; after.HeapAlloc > limit {
		b.Errorf("heap %d after the churn, %d before (limit %d)", after.HeapAlloc, before.HeapAlloc, limit)
	}
	b.ReportMetric(float64(loop.ok.Load()), "calls")
	b.ReportMetric(float64(loop.errs.Load()), "failed")
	b.ReportMetric(float64(before.Goroutines), "goroutines-before")
	b.ReportMetric(float64(after.Goroutines), "goroutines-after")
	b.ReportMetric(float64(before.HeapAlloc)/(1<<20), "heap-MiB-before")
	b.ReportMetric(float64(after.HeapAlloc)/(1<<20), "heap-MiB-after")
	b.ReportMetric(float64(after.RSS)/(1<<20), "rss-MiB-after")
	b.ReportMetric(cpuBefore, "idle-cpu-%-before")
	b.ReportMetric(cpuAfter, "idle-cpu-%-after")
	b.ReportMetric(0, "ns/op")
}

// writeTemp writes a configuration into a temporary file and returns its
// path.
func writeTemp(tb testing.TB, cfg string) string {
	tb.Helper()
	return writeConfig(tb, tb.TempDir(), "vigil.yaml", cfg)[0]
}
