package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The chaos suite measures vigil from outside, as an operator would: its
// admin API's /metrics (go_goroutines, go_memstats_heap_alloc_bytes,
// go_gc_duration_seconds) and /proc/PID/status (VmRSS, VmHWM).
//
// "Back to baseline" has to tell a leak from noise on a loaded 2-core machine:
//
//   - Goroutines are compared after the load has stopped and the proxy has
//     settled, against a baseline taken in the same state (same client
//     connections open, every endpoint's connections made). The count must
//     come back to at most baseline+chaosGoroutineSlack within a generous
//     deadline. The slack covers goroutines that live for a moment on their
//     own schedule and may be caught by one scrape: a timer's AfterFunc
//     (idle timers of client connections), the drain poll of an endpoint,
//     grpc-go's reconnect of a probe connection. A leak of anything per
//     connection, per stream or per endpoint is far above it.
//   - The heap is go_memstats_heap_alloc_bytes read right after a garbage
//     collection: vigil runs with GOGC=chaosGOGC, and each measurement
//     scrapes until two collections have run (rendering /metrics allocates,
//     so the scrapes drive the collector) and keeps the smallest value seen
//     after the first, which is the live heap plus a scrape's worth of
//     allocation. It must come back under
//     baseline*(1+chaosHeapGrowth) + chaosHeapSlack: a plateau (buffers,
//     pools, the event ring) fits, a leak that grows with the number of
//     faults, connections or endpoints does not (tests size their churn so
//     that a leak of a few KiB per item is several MiB), nor a dead
//     connection's buffers kept reachable.
//   - RSS is reported, not asserted: Go returns memory to the OS lazily.
const (
	chaosGOGC           = 25
	chaosGoroutineSlack = 3
	chaosHeapGrowth     = 0.25
	chaosHeapSlack      = 2 << 20
	// chaosSettle bounds the wait for goroutines and heap to come back.
	chaosSettle = 20 * time.Second
)

// startChaosVigil runs vigil with cfg (the admin API on) and the chaos
// suite's GOGC. It returns vigil and its admin base URL.
func startChaosVigil(t testing.TB, cfg yamlConfig) (*vigilProc, string) {
	t.Helper()
	cfg.Admin = true
	path := filepath.Join(t.TempDir(), "vigil.yaml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	v := startVigilEnv(t, path, "GOGC="+strconv.Itoa(chaosGOGC))
	return v, "http://" + v.adminAddr()
}

// chaosSample is one look at the vigil process.
type chaosSample struct {
	Goroutines int
	// HeapAlloc (bytes in live objects, and those allocated since the
	// last collection) is what is compared; HeapInuse (bytes in spans
	// holding objects) and HeapObjects are reported.
	HeapAlloc, HeapInuse, HeapObjects int64
	RSS, HWM                          int64 // bytes, /proc/PID/status VmRSS and VmHWM
}

func (s chaosSample) String() string {
	return fmt.Sprintf("goroutines %d, heap %.1f MiB (%d objects; %.1f MiB of spans), RSS %.1f MiB (peak %.1f MiB)",
		s.Goroutines, mib(s.HeapAlloc), s.HeapObjects, mib(s.HeapInuse), mib(s.RSS), mib(s.HWM))
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// chaosMetrics fetches and parses vigil's /metrics.
func chaosMetrics(base string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", base, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", base, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	return families, nil
}

// chaosScrape reads the unlabelled gauges of vigil's /metrics.
func chaosScrape(base string) (map[string]float64, error) {
	families, err := chaosMetrics(base)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) > 0 {
				continue
			}
			switch {
			case m.Gauge != nil:
				out[name] = m.GetGauge().GetValue()
			case m.Counter != nil:
				out[name] = m.GetCounter().GetValue()
			case m.Untyped != nil:
				out[name] = m.GetUntyped().GetValue()
			case m.Summary != nil:
				out[name+"_count"] = float64(m.GetSummary().GetSampleCount())
			}
		}
	}
	return out, nil
}

// chaosScrapeSeries reads every series of one family of vigil's /metrics,
// keyed by its labels as name="value" pairs joined by commas.
func chaosScrapeSeries(base, family string) (map[string]float64, error) {
	families, err := chaosMetrics(base)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, m := range families[family].GetMetric() {
		var labels []string
		for _, l := range m.GetLabel() {
			labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
		}
		key := strings.Join(labels, ",")
		switch {
		case m.Gauge != nil:
			out[key] = m.GetGauge().GetValue()
		case m.Counter != nil:
			out[key] = m.GetCounter().GetValue()
		}
	}
	return out, nil
}

// chaosProcMem reads VmRSS and VmHWM of process pid, in bytes.
func chaosProcMem(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	return rss, hwm, sc.Err()
}

// chaosMeasure takes one sample of vigil: goroutines from the last scrape,
// the heap as the minimum over scrapes that follow a garbage collection,
// memory from /proc.
func chaosMeasure(t testing.TB, v *vigilProc, base string) chaosSample {
	t.Helper()
	s, err := chaosTryMeasure(v, base)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// chaosTryMeasure scrapes until two collections have run since the first
// scrape (rendering /metrics allocates, so scrapes drive the collector
// under GOGC=chaosGOGC; at most 50 scrapes), and takes the smallest heap
// seen after the first of them: the live heap plus what was allocated since
// that collection, not the garbage of before.
func chaosTryMeasure(v *vigilProc, base string) (chaosSample, error) {
	var s chaosSample
	var firstGC float64
	seen := false
	for i := 0; i < 50; i++ {
		m, err := chaosScrape(base)
		if err != nil {
			return s, err
		}
		s.Goroutines = int(m["go_goroutines"])
		gcs := m["go_gc_duration_seconds_count"]
		if i == 0 {
			firstGC = gcs
		}
		if gcs > firstGC {
			if h := int64(m["go_memstats_heap_alloc_bytes"]); !seen || h < s.HeapAlloc {
				s.HeapAlloc = h
				s.HeapObjects = int64(m["go_memstats_heap_objects"])
			}
			if h := int64(m["go_memstats_heap_inuse_bytes"]); !seen || h < s.HeapInuse {
				s.HeapInuse = h
			}
			seen = true
			if gcs >= firstGC+2 && i >= 4 {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !seen {
		return s, errors.New("vigil ran no garbage collection during 50 scrapes of /metrics")
	}
	var err error
	s.RSS, s.HWM, err = chaosProcMem(v.cmd.Process.Pid)
	return s, err
}

// chaosBaseline waits for vigil to settle (the goroutine count stops
// moving) and returns the sample to compare against later.
func chaosBaseline(t testing.TB, v *vigilProc, base string) chaosSample {
	t.Helper()
	var last []int
	deadline := time.Now().Add(chaosSettle)
	for {
		s := chaosMeasure(t, v, base)
		last = append(last, s.Goroutines)
		if n := len(last); n >= 3 && last[n-1] == last[n-2] && last[n-2] == last[n-3] || time.Now().After(deadline) {
			t.Logf("baseline: %v", s)
			return s
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// chaosRequireBaseline fails the test unless vigil's goroutines and heap
// come back to the baseline (see the constants above for the margins)
// within chaosSettle.
func chaosRequireBaseline(t testing.TB, v *vigilProc, base string, baseline chaosSample, what string) chaosSample {
	t.Helper()
	s, err := chaosBackToBaseline(t, v, base, baseline, what, chaosSettle)
	if err != nil {
		t.Error(err)
	}
	return s
}

// chaosBackToBaseline waits up to settle for vigil's goroutines and heap to
// come back to the baseline; the error says by how much they did not.
func chaosBackToBaseline(t testing.TB, v *vigilProc, base string, baseline chaosSample, what string, settle time.Duration) (chaosSample, error) {
	t.Helper()
	heapLimit := int64(float64(baseline.HeapAlloc)*(1+chaosHeapGrowth)) + chaosHeapSlack
	deadline := time.Now().Add(settle)
	var s chaosSample
	for {
		s = chaosMeasure(t, v, base)
		if s.Goroutines <= baseline.Goroutines+chaosGoroutineSlack && s.HeapAlloc <= heapLimit {
			t.Logf("%s: %v (baseline %d goroutines, %.1f MiB heap)", what, s, baseline.Goroutines, mib(baseline.HeapAlloc))
			return s, nil
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return s, fmt.Errorf("%s: vigil did not come back to its baseline within %v: %v; baseline %v (allowed: %d goroutines, %.1f MiB heap)",
		what, settle, s, baseline, baseline.Goroutines+chaosGoroutineSlack, mib(heapLimit))
}

// latencies summarises a set of call durations.
type latencies []time.Duration

func (l latencies) quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q * float64(len(s)-1))
	return s[i]
}

func (l latencies) String() string {
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v", len(l),
		l.quantile(0.5).Round(10*time.Microsecond), l.quantile(0.99).Round(10*time.Microsecond), l.quantile(1).Round(10*time.Microsecond))
}
