package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

var update = flag.Bool("update", false, "rewrite golden files")

// adminFixture is vigil with its admin API in front of two backends.
func adminFixture(t *testing.T) ([]*backend, *vigilProc, string) {
	t.Helper()
	bs := []*backend{startBackend(t, "b1"), startBackend(t, "b2")}
	v := startVigil(t, yamlConfig{
		Admin:     true,
		Listeners: []yamlListener{{Name: "api", Cluster: "demo"}},
		Clusters:  []yamlCluster{{Name: "demo", Panic: 50, Endpoints: addrs(bs)}},
	}.String())
	for _, b := range bs {
		v.wait(15*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted "+b.id)
	}
	return bs, v, "http://" + v.adminAddr()
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	var body []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := res.Body.Read(buf)
		body = append(body, buf[:n]...)
		if err != nil {
			break
		}
	}
	return res.StatusCode, body
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func clusters(t *testing.T, base string) map[string]any {
	t.Helper()
	code, body := get(t, base+"/clusters")
	if code != http.StatusOK {
		t.Fatalf("/clusters answered %d: %s", code, body)
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("/clusters is not JSON: %v\n%s", err, body)
	}
	return doc
}

// endpointOf finds an endpoint object in a /clusters answer.
func endpointOf(t *testing.T, doc map[string]any, cluster, address string) (map[string]any, map[string]any) {
	t.Helper()
	for _, c := range doc["clusters"].([]any) {
		cm := c.(map[string]any)
		if cm["name"] != cluster {
			continue
		}
		for _, e := range cm["endpoints"].([]any) {
			if em := e.(map[string]any); em["address"] == address {
				return cm, em
			}
		}
	}
	t.Fatalf("no endpoint %s in cluster %s: %v", address, cluster, doc)
	return nil, nil
}

func TestAdminClustersThroughEvictionAndReadmission(t *testing.T) {
	t.Parallel()
	bs, v, base := adminFixture(t)

	doc := clusters(t, base)
	if got := keys(doc); !slices.Equal(got, []string{"clusters"}) {
		t.Fatalf("/clusters top-level keys = %v", got)
	}
	c, e := endpointOf(t, doc, "demo", bs[1].addr)
	for _, k := range []string{"name", "healthy", "total", "panic", "endpoints"} {
		if _, ok := c[k]; !ok {
			t.Errorf("cluster object lacks %q: %v", k, keys(c))
		}
	}
	for _, k := range []string{"address", "weight", "health", "reason", "since", "failures", "last_probe", "last_latency_ms", "inflight"} {
		if _, ok := e[k]; !ok {
			t.Errorf("endpoint object lacks %q: %v", k, keys(e))
		}
	}
	if c["healthy"] != 2.0 || c["total"] != 2.0 || c["panic"] != false || e["health"] != "healthy" || e["weight"] != 1.0 {
		t.Errorf("before eviction: cluster %v endpoint %v", c, e)
	}
	if _, err := time.Parse(time.RFC3339Nano, e["since"].(string)); err != nil {
		t.Errorf("since %v is not a timestamp: %v", e["since"], err)
	}

	from := v.mark()
	bs[1].serving(false)
	v.wait(10*time.Second, from, match("endpoint evicted", "endpoint", bs[1].addr), "evicted")
	c, e = endpointOf(t, clusters(t, base), "demo", bs[1].addr)
	if c["healthy"] != 1.0 || c["total"] != 2.0 || e["health"] != "unhealthy" || e["reason"] != "NOT_SERVING" || e["failures"].(float64) < 1 {
		t.Errorf("after eviction: cluster %v endpoint %v", c, e)
	}

	from = v.mark()
	bs[1].serving(true)
	v.wait(10*time.Second, from, match("endpoint readmitted", "endpoint", bs[1].addr), "readmitted")
	c, e = endpointOf(t, clusters(t, base), "demo", bs[1].addr)
	if c["healthy"] != 2.0 || e["health"] != "healthy" || e["reason"] != "" || e["failures"] != 0.0 {
		t.Errorf("after readmission: cluster %v endpoint %v", c, e)
	}
}

func TestAdminReadyAcrossStartupAndShutdown(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "slow")
	b.stall.Store(true) // the first round of probes takes a whole timeout
	v := startVigil(t, yamlConfig{
		Admin:      true,
		DrainDelay: "1s",
		Listeners:  []yamlListener{{Name: "api", Cluster: "demo"}},
		Clusters: []yamlCluster{{Name: "demo", Endpoints: []string{b.addr},
			Health: "mode: check\ninterval: 1500ms\ntimeout: 1500ms\nunhealthy_threshold: 3"}},
	}.String())
	base := "http://" + v.adminAddr()
	if code, _ := get(t, base+"/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready before the first round of probes = %d; want 503", code)
	}
	own := healthpb.NewHealthClient(dialClient(t, v.listener("api")).conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if resp, err := own.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("own health before the first round = %v, %v; want NOT_SERVING", resp, err)
	}
	eventually(t, 10*time.Second, func() bool { code, _ := get(t, base+"/ready"); return code == http.StatusOK },
		"/ready turns 200 after the first round")
	if resp, err := own.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("own health after the first round = %v, %v; want SERVING", resp, err)
	}

	// Shutdown: NOT_SERVING at once, while the listeners still accept for
	// the drain delay.
	v.signal(syscall.SIGTERM)
	eventually(t, 900*time.Millisecond, func() bool { code, _ := get(t, base+"/ready"); return code == http.StatusServiceUnavailable },
		"/ready turns 503 as shutdown begins")
	resp, err := own.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("own health during the drain delay = %v, %v; want NOT_SERVING from a listener still open", resp, err)
	}
	if err := v.exited(15 * time.Second); err != nil {
		t.Errorf("vigil exited with %v; want 0", err)
	}
}

func TestAdminMetricsAreValidPrometheus(t *testing.T) {
	t.Parallel()
	bs, v, base := adminFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := dialClient(t, v.listener("api"))
	for range 20 {
		if _, err := c.call(ctx); err != nil {
			t.Fatal(err)
		}
	}
	from := v.mark()
	bs[1].serving(false)
	v.wait(10*time.Second, from, match("endpoint evicted"), "evicted")
	bs[1].serving(true)
	v.wait(10*time.Second, from, match("endpoint readmitted"), "readmitted")
	v.signal(syscall.SIGHUP) // one reload
	v.wait(10*time.Second, from, match("config reloaded"), "reloaded")

	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics answered %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	want := map[string][]string{
		"vigil_endpoint_healthy":     {"cluster", "endpoint"},
		"vigil_health_checks_total":  {"cluster", "result"},
		"vigil_evictions_total":      {"cluster", "reason"},
		"vigil_readmissions_total":   {"cluster"},
		"vigil_upstream_rq_total":    {"cluster", "code", "route"},
		"vigil_config_reloads_total": {"result"},
	}
	for name, labels := range want {
		mf := families[name]
		if mf == nil || len(mf.Metric) == 0 {
			t.Errorf("metric %s missing", name)
			continue
		}
		for _, m := range mf.Metric {
			var got []string
			for _, l := range m.Label {
				got = append(got, l.GetName())
			}
			sort.Strings(got)
			if !slices.Equal(got, labels) {
				t.Errorf("%s labels = %v; want %v", name, got, labels)
			}
		}
	}
	value := func(name string, labels map[string]string) float64 {
		for _, m := range families[name].GetMetric() {
			if matchLabels(m, labels) {
				if m.Counter != nil {
					return m.Counter.GetValue()
				}
				return m.Gauge.GetValue()
			}
		}
		return -1
	}
	if got := value("vigil_evictions_total", map[string]string{"cluster": "demo", "reason": "NOT_SERVING"}); got != 1 {
		t.Errorf("evictions{NOT_SERVING} = %v; want 1", got)
	}
	if got := value("vigil_readmissions_total", map[string]string{"cluster": "demo"}); got != 1 {
		t.Errorf("readmissions = %v; want 1", got)
	}
	if got := value("vigil_upstream_rq_total", map[string]string{"cluster": "demo", "code": "OK"}); got < 20 {
		t.Errorf("upstream_rq{OK} = %v; want at least 20", got)
	}
	if got := value("vigil_config_reloads_total", map[string]string{"result": "success"}); got != 1 {
		t.Errorf("config_reloads{success} = %v; want 1", got)
	}
	for _, b := range bs {
		if got := value("vigil_endpoint_healthy", map[string]string{"cluster": "demo", "endpoint": b.addr}); got != 1 {
			t.Errorf("endpoint_healthy{%s} = %v; want 1", b.addr, got)
		}
	}
}

func matchLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.Label {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

func TestAdminEventsDeliverEvictionWithin100ms(t *testing.T) {
	t.Parallel()
	bs, v, base := adminFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/events?replay=0", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("/events content type %q", ct)
	}

	type arrival struct {
		event map[string]any
		at    time.Time
	}
	events := make(chan arrival, 16)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "data: ") {
				continue
			}
			var ev map[string]any
			if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev) == nil {
				events <- arrival{ev, time.Now()}
			}
		}
	}()

	from := v.mark()
	bs[0].serving(false)
	rec, _ := v.wait(10*time.Second, from, match("endpoint evicted", "endpoint", bs[0].addr), "evicted")
	logged, err := time.Parse(time.RFC3339Nano, rec.str("time"))
	if err != nil {
		t.Fatal(err)
	}
	for a := range events {
		if a.event["msg"] != "endpoint evicted" {
			continue
		}
		if a.event["endpoint"] != bs[0].addr || a.event["reason"] != "NOT_SERVING" || a.event["time"] != rec.str("time") {
			t.Errorf("event %v does not match the log record %v", a.event, rec)
		}
		if lag := a.at.Sub(logged); lag > 100*time.Millisecond {
			t.Errorf("the eviction reached /events %v after its log record; want within 100ms", lag)
		} else {
			t.Logf("the eviction reached /events %v after its log record", lag)
		}
		return
	}
	t.Fatal("the event stream ended without the eviction")
}

func TestStatusCommandGolden(t *testing.T) {
	t.Parallel()
	bs, v, base := adminFixture(t)
	from := v.mark()
	bs[1].serving(false)
	v.wait(10*time.Second, from, match("endpoint evicted"), "evicted")

	out, err := exec.Command(bin("vigil"), "status", "--admin", strings.TrimPrefix(base, "http://")).CombinedOutput()
	if err != nil {
		t.Fatalf("vigil status: %v\n%s", err, out)
	}
	got := maskStatus(string(out), map[string]string{bs[0].addr: "BACKEND-1", bs[1].addr: "BACKEND-2"})
	golden := filepath.Join("testdata", "status.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("vigil status output (masked) differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
	}
}

// maskStatus makes `vigil status` output comparable between runs: rows are
// cut at the column starts of their table's header, the volatile columns
// (FOR, PROBED, LATENCY) become "~", backend addresses become names, and
// the fields are joined with " | " and rows sorted (alignment itself is
// checked by the admin package's own golden tests). FAILURES keeps whether
// there were any: an evicted endpoint is probed again while the command
// starts, and its count grows with each probe.
func maskStatus(out string, addrs map[string]string) string {
	volatile := map[string]bool{"FOR": true, "PROBED": true, "LATENCY": true}
	var header []string
	var starts []int
	var b strings.Builder
	var rows []string // of the current table, sorted when it ends: addresses order rows
	flush := func() {
		sort.Strings(rows)
		for _, r := range rows {
			b.WriteString(r + "\n")
		}
		rows = rows[:0]
	}
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if strings.TrimSpace(line) == "" {
			flush()
			header = nil
			b.WriteString("\n")
			continue
		}
		if header == nil {
			header = strings.Fields(line)
			starts = starts[:0]
			for _, loc := range regexp.MustCompile(`\S+`).FindAllStringIndex(line, -1) {
				starts = append(starts, loc[0])
			}
			b.WriteString(strings.Join(header, " | ") + "\n")
			continue
		}
		fields := make([]string, len(header))
		for i, start := range starts {
			end := len(line)
			if i+1 < len(starts) {
				end = min(starts[i+1], len(line))
			}
			if start < len(line) {
				fields[i] = strings.TrimSpace(line[start:end])
			}
			if name, ok := addrs[fields[i]]; ok {
				fields[i] = name
			}
			if volatile[header[i]] {
				fields[i] = "~"
			}
			if header[i] == "FAILURES" && fields[i] != "0" && fields[i] != "" {
				fields[i] = "1+"
			}
		}
		rows = append(rows, strings.Join(fields, " | "))
	}
	flush()
	return b.String()
}
