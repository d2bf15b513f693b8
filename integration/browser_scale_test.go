//go:build browser

package integration

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// fleetConfig is a vigil configuration for the fleet's endpoints in
// clusters of perCluster, watched, with the admin API on admin.
func fleetConfig(addrs []string, perCluster int, admin string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "admin:\n  address: %s\nlog:\n  format: json\nlisteners:\n  - name: api\n    address: 127.0.0.1:0\n    protocol: grpc\n    cluster: c0000\nclusters:\n", admin)
	for i := 0; i < len(addrs); i += perCluster {
		fmt.Fprintf(&b, "  - name: c%04d\n    health_check:\n      mode: watch\n    endpoints:\n", i/perCluster)
		for _, a := range addrs[i:min(i+perCluster, len(addrs))] {
			fmt.Fprintf(&b, "      - address: %s\n", a)
		}
	}
	return b.String()
}

// startFleetVigil starts n flippable endpoints and a vigil watching them,
// and waits until every one is healthy.
func startFleetVigil(tb testing.TB, n, perCluster int) (*flipFleet, *vigilProc) {
	tb.Helper()
	raiseFileLimit()
	f := startFlipFleet(tb, n, 0)
	v := startVigil(tb, fleetConfig(f.addrs, perCluster, "127.0.0.1:0"))
	if _, ok := v.waitAllHealthy(2*time.Minute, n); !ok {
		tb.Fatalf("not all %d endpoints healthy within 2 minutes", n)
	}
	return f, v
}

func TestBrowserStatusPageTenThousandEndpoints(t *testing.T) {
	const n = 10000
	f, v := startFleetVigil(t, n, 100)
	base := "http://" + v.adminAddr()
	br := newBrowser(t)
	start := time.Now()
	br.open(base + "/")
	br.waitJS("every cluster listed", 30*time.Second, `window.vigilStatus.names.length === 100 && window.vigilStatus.eps.size === 10000`)
	t.Logf("10,000 endpoints: page loaded and every row received in %v", time.Since(start))
	// Collapsed by default at this size: a hundred cluster rows, and only
	// those in view are in the DOM.
	if rows := evalJS[int](br, `document.querySelectorAll('.row.ep').length`); rows != 0 {
		t.Errorf("%d endpoint rows drawn with every cluster collapsed", rows)
	}
	if rows := evalJS[int](br, `document.querySelectorAll('.row').length`); rows > 80 {
		t.Errorf("%d rows in the DOM: the list is not virtualized", rows)
	}
	br.screenshot("status-page-10000-collapsed")

	// A flip shows within 2 s: find the endpoint with the filter, flip it.
	addr := f.addrs[5555]
	br.filter(addr)
	br.waitJS("the filtered row", 5*time.Second, rowExpr("c0055", addr)+`?.dataset.health === 'healthy'`)
	flipped := time.Now()
	f.set(t, addr, false)
	br.waitJS("the flip on the page", 2*time.Second, rowExpr("c0055", addr)+`?.dataset.health === 'unhealthy'`)
	t.Logf("10,000 endpoints: flip shown after %v", time.Since(flipped))
	br.screenshot("status-page-10000-flip")

	// Expanded, the list still holds only what is in view.
	br.filter("")
	evalJS[bool](br, `(document.querySelector('.bar button:nth-of-type(1)').click(), true)`)
	br.waitJS("every cluster expanded", 5*time.Second, `window.vigilStatus.rows.length === 10100`)
	if rows := evalJS[int](br, `document.querySelectorAll('.row').length`); rows > 80 {
		t.Errorf("%d rows in the DOM with 10,100 in the list: not virtualized", rows)
	}
	evalJS[bool](br, `(document.getElementById('list').scrollTop = 28 * 5000, true)`)
	br.waitJS("rows drawn where the list was scrolled to", 2*time.Second, `[...document.querySelectorAll('.row.ep')].some((r) => r.dataset.cluster === 'c0049')`)
	f.set(t, addr, true)
	br.waitJS("the readmission", 2*time.Second, `[...window.vigilStatus.eps.values()].find((e) => e.row.address === `+jsString(addr)+`).row.health === 'healthy'`)
	br.noProblems()
}

// BenchmarkBrowserPage measures the status page in chromium: load time
// and memory at 100 and 10,000 endpoints, bytes per second received while
// 100 endpoints flap every second, and vigil's CPU with the page open and
// closed. make bench-browser runs it; every figure is a median of rounds.
func BenchmarkBrowserPage(b *testing.B) {
	benchSetup(b, "vigil, the health fleet, chromium, this process")
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			reportLoad(b)
			f, v := startFleetVigil(b, n, 100)
			base := "http://" + v.adminAddr()
			var loads, heaps, rsss, nodes []float64
			for range 3 {
				br := newBrowser(b)
				start := time.Now()
				br.open(base + "/")
				br.waitJS("every row", time.Minute, fmt.Sprintf(`window.vigilStatus.eps.size === %d`, n))
				loads = append(loads, float64(time.Since(start).Milliseconds()))
				time.Sleep(2 * time.Second) // let it settle, then measure
				heap, nn := br.metrics()
				heaps = append(heaps, heap/(1<<20))
				nodes = append(nodes, nn)
				rsss = append(rsss, float64(br.rss())/(1<<20))
			}
			b.ReportMetric(median(loads), "load-ms")
			b.ReportMetric(median(heaps), "js-heap-MiB")
			b.ReportMetric(median(rsss), "chromium-rss-MiB")
			b.ReportMetric(median(nodes), "dom-nodes")
			if n != 100 {
				return
			}
			// 100 endpoints flap every second (each flips once a second:
			// 100 transitions/s): what the page receives, and what it costs
			// vigil to have it open.
			f.flap(b, 100, time.Second)
			defer f.flap(b, 0, 0)
			time.Sleep(3 * time.Second)
			const window = 20 * time.Second
			br := newBrowser(b)
			br.open(base + "/")
			time.Sleep(2 * time.Second)
			bytes0, cpu0 := br.streamBytes(), procCPU(b, v.cmd.Process.Pid)
			time.Sleep(window)
			bytes1, cpu1 := br.streamBytes(), procCPU(b, v.cmd.Process.Pid)
			b.ReportMetric(float64(bytes1-bytes0)/window.Seconds()/1024, "flap-KiB/s")
			b.ReportMetric(100*(cpu1-cpu0).Seconds()/window.Seconds(), "vigil-cpu-open-%")
			br.do("close the page", chromedpNavigateBlank())
			time.Sleep(2 * time.Second)
			cpu0 = procCPU(b, v.cmd.Process.Pid)
			time.Sleep(window)
			cpu1 = procCPU(b, v.cmd.Process.Pid)
			b.ReportMetric(100*(cpu1-cpu0).Seconds()/window.Seconds(), "vigil-cpu-closed-%")
		})
	}
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}
