package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/logging"
	"github.com/vigil-proxy/vigil/internal/metrics"
	"github.com/vigil-proxy/vigil/internal/state"
)

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestClustersJSONShape checks the contract's keys, and the extras, on the
// raw JSON rather than through the Go types.
func TestClustersJSONShape(t *testing.T) {
	s := newStore(t)
	seed(t, s)
	_, base := start(t, Options{Store: s, Stats: fixedStats})
	code, hdr, body := get(t, base+"/clusters")
	if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Fatalf("GET /clusters = %d %s", code, hdr.Get("Content-Type"))
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, body)
	}
	if got := keys(doc); !slices.Equal(got, []string{"clusters"}) {
		t.Fatalf("top-level keys %v", got)
	}
	clusters := doc["clusters"].([]any)
	if len(clusters) != 2 {
		t.Fatalf("%d clusters", len(clusters))
	}
	wantCluster := []string{"check", "endpoints", "healthy", "lb_policy", "name", "panic", "panic_threshold", "tls", "total"}
	wantEndpoint := []string{"address", "cause", "check", "effective_weight", "ejection", "failures", "health", "hint", "inflight", "last_latency_ms",
		"last_probe", "load_report", "reason", "since", "source", "weight"}
	for _, c := range clusters {
		c := c.(map[string]any)
		if got := keys(c); !slices.Equal(got, wantCluster) {
			t.Errorf("cluster keys %v; want %v", got, wantCluster)
		}
		for _, e := range c["endpoints"].([]any) {
			if got := keys(e.(map[string]any)); !slices.Equal(got, wantEndpoint) {
				t.Errorf("endpoint keys %v; want %v", got, wantEndpoint)
			}
		}
	}
	orders := clusters[0].(map[string]any)
	ep := orders["endpoints"].([]any)[1].(map[string]any)
	for k, want := range map[string]any{
		"address": "127.0.0.1:50052", "weight": 2.0, "health": "unhealthy", "reason": "NOT_SERVING",
		"cause": "answer", "since": "2026-11-24T10:00:00Z", "failures": 1.0, "check": "check",
		"last_probe": "2026-11-24T10:03:09Z", "last_latency_ms": 0.42, "inflight": 0.0,
		"effective_weight": 0.67, // slow start's figure, in hundredths
	} {
		if ep[k] != want {
			t.Errorf("endpoint %s = %#v; want %#v", k, ep[k], want)
		}
	}
	// Without slow start's figure, the effective weight is the weight.
	if first := orders["endpoints"].([]any)[0].(map[string]any); first["effective_weight"] != first["weight"] {
		t.Errorf("effective_weight %v, weight %v; want them equal", first["effective_weight"], first["weight"])
	}
	// Without load reports, load_report is null; with one, its figures.
	if first := orders["endpoints"].([]any)[0].(map[string]any); first["load_report"] != nil {
		t.Errorf("load_report %v; want null", first["load_report"])
	}
	lr, _ := clusters[1].(map[string]any)["endpoints"].([]any)[0].(map[string]any)["load_report"].(map[string]any)
	for k, want := range map[string]any{"cpu_utilization": 0.9, "application_utilization": 0.5, "qps": 100.0, "eps": 2.0,
		"at": "2026-11-24T10:03:10Z", "weight": 192.31} {
		if lr[k] != want {
			t.Errorf("load_report %s = %#v; want %#v", k, lr[k], want)
		}
	}
	if age := lr["age_seconds"]; age != 2.0 {
		t.Errorf("load_report age_seconds = %v; want 2 (the report at 10:03:10, the answer at 10:03:12)", age)
	}
	// An endpoint never probed has null probe figures; one whose
	// statuses are pushed has a time but no latency.
	draining := orders["endpoints"].([]any)[2].(map[string]any)
	if draining["last_probe"] != nil || draining["last_latency_ms"] != nil {
		t.Errorf("never-probed endpoint: last_probe %v, last_latency_ms %v; want null", draining["last_probe"], draining["last_latency_ms"])
	}
	pushed := clusters[1].(map[string]any)["endpoints"].([]any)[1].(map[string]any)
	if pushed["last_probe"] != "2026-11-24T10:03:11Z" || pushed["last_latency_ms"] != nil {
		t.Errorf("pushed-status endpoint: last_probe %v, last_latency_ms %v; want a time and null", pushed["last_probe"], pushed["last_latency_ms"])
	}
}

func TestClustersValues(t *testing.T) {
	s := newStore(t)
	seed(t, s)
	_, base := start(t, Options{Store: s, Stats: fixedStats})
	c, err := NewClient(base)
	if err != nil {
		t.Fatal(err)
	}
	resp, _, err := c.Clusters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	type summary struct {
		name           string
		healthy, total int
		panic          bool
		policy, check  string
		endpoints      []string
	}
	var got []summary
	for _, cl := range resp.Clusters {
		sm := summary{cl.Name, cl.Healthy, cl.Total, cl.Panic, cl.LBPolicy, cl.Check, nil}
		for _, e := range cl.Endpoints {
			sm.endpoints = append(sm.endpoints, e.Address+"="+e.Health)
		}
		got = append(got, sm)
	}
	want := []summary{
		// The draining endpoint is listed but not counted in total.
		{"orders", 1, 2, false, "round_robin", "check",
			[]string{"127.0.0.1:50051=healthy", "127.0.0.1:50052=unhealthy", "127.0.0.1:50053=draining"}},
		{"payments", 0, 2, true, "least_request", "watch",
			[]string{"127.0.0.1:50061=unhealthy", "127.0.0.1:50062=pending"}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("clusters:\n got %v\nwant %v", got, want)
	}
	if e := resp.Clusters[0].Endpoints[0]; e.Inflight != 3 || *e.LastLatencyMS != 1.234 {
		t.Fatalf("stats of %s: inflight %d, latency %v", e.Address, e.Inflight, *e.LastLatencyMS)
	}
}

func TestClustersFollowEvictionAndReadmission(t *testing.T) {
	s := newStore(t)
	seed(t, s)
	_, base := start(t, Options{Store: s})
	c, _ := NewClient(base)
	endpoint := func() (Cluster, Endpoint) {
		t.Helper()
		resp, _, err := c.Clusters(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Clusters[0], resp.Clusters[0].Endpoints[0]
	}

	evicted := checker.Status{Health: checker.Unhealthy, Reason: "UNAVAILABLE", Cause: checker.CauseTransport,
		Since: t0.Add(time.Minute), Failures: 3}
	setStatus(t, s, "orders", "127.0.0.1:50051", evicted)
	cl, ep := endpoint()
	if cl.Healthy != 0 || cl.Total != 2 || ep.Health != "unhealthy" || ep.Reason != "UNAVAILABLE" ||
		ep.Cause != "transport" || ep.Failures != 3 || !ep.Since.Equal(t0.Add(time.Minute)) {
		t.Fatalf("after eviction: cluster %d/%d, endpoint %+v", cl.Healthy, cl.Total, ep)
	}

	readmitted := checker.Status{Health: checker.Healthy, Since: t0.Add(2 * time.Minute), Successes: 2}
	setStatus(t, s, "orders", "127.0.0.1:50051", readmitted)
	cl, ep = endpoint()
	if cl.Healthy != 1 || ep.Health != "healthy" || ep.Reason != "" || ep.Cause != "" || ep.Failures != 0 ||
		!ep.Since.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("after readmission: cluster %d/%d, endpoint %+v", cl.Healthy, cl.Total, ep)
	}
}

func TestClustersEmptyStore(t *testing.T) {
	_, base := start(t, Options{Store: newStore(t)})
	_, _, body := get(t, base+"/clusters")
	if got := string(bytes.TrimSpace(body)); got != `{
  "clusters": []
}` {
		t.Fatalf("empty store: %s", got)
	}
}

func TestReady(t *testing.T) {
	var ready atomic.Bool
	_, base := start(t, Options{Store: newStore(t), Ready: ready.Load})
	for _, tc := range []struct {
		ready bool
		code  int
		body  string
	}{{false, 503, "not ready\n"}, {true, 200, "ready\n"}, {false, 503, "not ready\n"}} {
		ready.Store(tc.ready)
		code, _, body := get(t, base+"/ready")
		if code != tc.code || string(body) != tc.body {
			t.Errorf("ready=%v: GET /ready = %d %q; want %d %q", tc.ready, code, body, tc.code, tc.body)
		}
	}
	if ok, err := (&Client{base: base, http: http.DefaultClient}).Ready(context.Background()); err != nil || ok {
		t.Errorf("Client.Ready = %v, %v; want false", ok, err)
	}
}

func TestReadyWithoutFuncIsReady(t *testing.T) {
	_, base := start(t, Options{Store: newStore(t)})
	if code, _, _ := get(t, base+"/ready"); code != http.StatusOK {
		t.Fatalf("GET /ready = %d", code)
	}
}

func TestMetricsAreServedAndParse(t *testing.T) {
	s := newStore(t)
	seed(t, s)
	m := metrics.New(metrics.Options{Store: s})
	m.Probe("orders", "127.0.0.1:50051", checker.Result{OK: true, Latency: time.Millisecond})
	_, base := start(t, Options{Store: s, Gatherer: m})
	code, hdr, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d: %s", code, body)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type %q", ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	for _, name := range []string{"vigil_endpoint_healthy", "vigil_health_checks_total", "vigil_config_reloads_total",
		"go_goroutines", "process_cpu_seconds_total"} {
		if fams[name] == nil {
			t.Errorf("/metrics has no %s", name)
		}
	}
	var healthy []string
	for _, mt := range fams["vigil_endpoint_healthy"].GetMetric() {
		if mt.GetGauge().GetValue() == 1 {
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == "endpoint" {
					healthy = append(healthy, lp.GetValue())
				}
			}
		}
	}
	if !slices.Equal(healthy, []string{"127.0.0.1:50051"}) {
		t.Errorf("healthy endpoints in /metrics: %v", healthy)
	}
}

func TestNoGathererNoMetrics(t *testing.T) {
	_, base := start(t, Options{Store: newStore(t)})
	if code, _, _ := get(t, base+"/metrics"); code != http.StatusNotFound {
		t.Fatalf("GET /metrics without a gatherer = %d", code)
	}
}

func TestIndexAndUnknownPaths(t *testing.T) {
	_, base := start(t, Options{Store: newStore(t)})
	if code, _, body := get(t, base+"/"); code != 200 || !contains(string(body), "/clusters", "/events", "/metrics", "/ready") {
		t.Fatalf("GET / = %d %s", code, body)
	}
	if code, _, _ := get(t, base+"/nope"); code != http.StatusNotFound {
		t.Fatalf("GET /nope = %d", code)
	}
	res, err := http.Post(base+"/clusters", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /clusters = %d", res.StatusCode)
	}
}

func TestDashboardIsServed(t *testing.T) {
	_, base := start(t, Options{Store: newStore(t)})
	code, _, body := get(t, base+"/dashboards/vigil.json")
	if code != 200 || !json.Valid(body) || !bytes.Equal(body, dashboard) {
		t.Fatalf("GET /dashboards/vigil.json = %d, %d bytes", code, len(body))
	}
}

func TestServeLogsItsAddress(t *testing.T) {
	var logs logBuffer
	_, base := start(t, Options{Store: newStore(t), Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	want := strings.TrimPrefix(base, "http://")
	waitFor(t, "the admin listening record", func() bool { return logs.String() != "" })
	var rec struct{ Msg, Address string }
	if err := json.Unmarshal([]byte(strings.SplitN(logs.String(), "\n", 2)[0]), &rec); err != nil ||
		rec.Msg != "admin listening" || rec.Address != want {
		t.Fatalf("first log record %q; want admin listening with address %s", logs.String(), want)
	}
	if strings.Contains(logs.String(), "no authentication") {
		t.Fatal("loopback address warned about")
	}
}

// eventLogger returns a logger whose eviction-log records go to the store
// (through the logging tee, as in vigil) and, as JSON lines, to logs.
func eventLogger(s *state.Store, logs *logBuffer) *slog.Logger {
	return slog.New(logging.EventLog(slog.NewJSONHandler(logs, nil), s))
}

func logEviction(log *slog.Logger, i int) {
	log.Warn("endpoint evicted", "cluster", "orders", "endpoint", fmt.Sprintf("127.0.0.1:%d", 50000+i),
		"check", "check", "reason", "NOT_SERVING", "failures", 1, "healthy", 1, "total", 2)
}

// TestEventsAreTheJSONLogRecords checks the wire format with a raw reader:
// headers, id lines, and data that is byte for byte the JSON log line.
func TestEventsAreTheJSONLogRecords(t *testing.T) {
	s := newStore(t)
	var logs logBuffer
	log := eventLogger(s, &logs)
	log.Info("config loaded", "file", "vigil.yaml", "listeners", 1, "clusters", 1, "endpoints", 2)
	log.Debug("endpoint drained", "cluster", "orders") // below INFO: not an event, not in the stream
	log.Warn("endpoint evicted", "cluster", "orders", "endpoint", "127.0.0.1:50052", "check", "watch",
		"reason", "NOT_SERVING", "failures", 1, "healthy", 1, "total", 2,
		"hint", "a \"quoted\"\nmulti-line hint", "err", fmt.Errorf("wrapped: %w", context.DeadlineExceeded))

	_, base := start(t, Options{Store: s})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/events", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	logLines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	want := []string{
		"retry: 2000", ": vigil eviction log", "",
		"id: 1", "data: " + logLines[0], "",
		"id: 2", "data: " + logLines[1], "",
	}
	var lines []string
	sc := bufio.NewScanner(res.Body)
	for len(lines) < len(want) && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if !slices.Equal(lines, want) {
		t.Fatalf("stream:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestEventsReplayThenLive(t *testing.T) {
	s := newStore(t)
	var logs logBuffer
	log := eventLogger(s, &logs)
	for i := range 150 {
		logEviction(log, i)
	}
	_, base := start(t, Options{Store: s})
	st := follow(t, base, EventsOptions{Replay: -1}) // the server's default: 100
	for want := uint64(51); want <= 150; want++ {
		if ev := st.next(t); ev.Seq != want {
			t.Fatalf("replayed event %d; want %d", ev.Seq, want)
		}
	}
	st.quiet(t)

	log.Info("endpoint readmitted", "cluster", "orders", "endpoint", "127.0.0.1:50001", "check", "check",
		"healthy", 2, "total", 2)
	ev := st.next(t)
	if ev.Seq != 151 || ev.Msg != "endpoint readmitted" || ev.Level != "INFO" || ev.Attr("endpoint") != "127.0.0.1:50001" ||
		ev.Attr("healthy") != "2" || ev.Time.IsZero() {
		t.Fatalf("live event %+v", ev)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if string(ev.Data) != lines[len(lines)-1] {
		t.Fatalf("event data\n%s\nlog line\n%s", ev.Data, lines[len(lines)-1])
	}
}

func TestEventsReplayOptions(t *testing.T) {
	s := newStore(t)
	var logs logBuffer
	log := eventLogger(s, &logs)
	for i := range 10 {
		logEviction(log, i)
	}
	_, base := start(t, Options{Store: s, Replay: 3})
	for _, tc := range []struct {
		name  string
		opts  EventsOptions
		first uint64
	}{
		{"server default", EventsOptions{Replay: -1}, 8},
		{"asked for 5", EventsOptions{Replay: 5}, 6},
		{"asked for more than held", EventsOptions{Replay: 5000}, 1},
		{"resume after 4", EventsOptions{After: 4}, 5},
		{"resume with a number from an earlier process", EventsOptions{After: 999}, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := follow(t, base, tc.opts)
			for want := tc.first; want <= 10; want++ {
				if ev := st.next(t); ev.Seq != want {
					t.Fatalf("event %d; want %d", ev.Seq, want)
				}
			}
			st.quiet(t)
		})
	}

	t.Run("no replay, then live", func(t *testing.T) {
		connected := make(chan struct{}, 1)
		st := follow(t, base, EventsOptions{Replay: 0, Connected: func() { connected <- struct{}{} }})
		// Wait until the stream is connected: an event logged before
		// that would be history, which replay=0 leaves out.
		<-connected
		logEviction(log, 99)
		if ev := st.next(t); ev.Seq != 11 {
			t.Fatalf("first event %d; want 11 (the live one)", ev.Seq)
		}
	})

	t.Run("last_event_id query", func(t *testing.T) {
		code, _, body := get(t, base+"/events?last_event_id=abc")
		if code != http.StatusBadRequest {
			t.Fatalf("bad last_event_id: %d %s", code, body)
		}
	})
	for _, q := range []string{"replay=-1", "replay=x"} {
		if code, _, _ := get(t, base+"/events?"+q); code != http.StatusBadRequest {
			t.Errorf("/events?%s = %d; want 400", q, code)
		}
	}
}

func TestEventsHeartbeat(t *testing.T) {
	_, base := start(t, Options{Store: newStore(t), Heartbeat: 10 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/events", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	beats := 0
	for beats < 3 && sc.Scan() {
		if sc.Text() == ": heartbeat" {
			beats++
		}
	}
	if beats < 3 {
		t.Fatalf("saw %d heartbeats before the stream ended: %v", beats, sc.Err())
	}
}

func TestEventStreamsAreBounded(t *testing.T) {
	_, base := start(t, Options{Store: newStore(t), MaxStreams: 2})
	connected := make(chan struct{}, 2)
	for range 2 {
		follow(t, base, EventsOptions{Connected: func() { connected <- struct{}{} }})
	}
	for range 2 {
		<-connected
	}
	code, hdr, _ := get(t, base+"/events")
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Fatalf("third stream: %d (Retry-After %q); want 503", code, hdr.Get("Retry-After"))
	}
	// The other endpoints still answer.
	if code, _, _ := get(t, base+"/clusters"); code != 200 {
		t.Fatalf("GET /clusters with streams at the limit = %d", code)
	}
}

func TestShutdownEndsStreams(t *testing.T) {
	s := newStore(t)
	srv := New(Options{Store: s})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	base := "http://" + ln.Addr().String()

	c, _ := NewClient(base)
	const n = 3
	connected := make(chan struct{}, n)
	ended := make(chan error, n)
	for range n {
		go func() {
			ended <- c.Events(context.Background(), EventsOptions{Connected: func() { connected <- struct{}{} }},
				func(Event) error { return nil })
		}()
	}
	for range n {
		<-connected
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with open streams: %v", err)
	}
	for range n {
		if err := <-ended; err == nil {
			t.Error("a client saw no end of its stream")
		}
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after Shutdown = %v; want nil", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
}

func TestRequestsAreBounded(t *testing.T) {
	s := newStore(t)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	// Ready blocks the one request slot until released.
	_, base := start(t, Options{Store: s, MaxRequests: 1, Ready: func() bool {
		entered <- struct{}{}
		<-release
		return true
	}})
	done := make(chan int)
	go func() {
		code, _, _ := get(t, base+"/ready")
		done <- code
	}()
	<-entered
	if code, _, _ := get(t, base+"/clusters"); code != http.StatusServiceUnavailable {
		t.Errorf("second request while the only slot is busy = %d; want 503", code)
	}
	close(release)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("first request = %d", code)
	}
}

// TestStreamsOutliveTheReadTimeout checks that the server's read timeout,
// which protects it from slow clients, does not end event streams.
func TestStreamsOutliveTheReadTimeout(t *testing.T) {
	s := newStore(t)
	srv := New(Options{Store: s, Heartbeat: 10 * time.Millisecond})
	srv.http.ReadTimeout = 50 * time.Millisecond
	srv.http.ReadHeaderTimeout = 50 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
	})
	connected := make(chan struct{}, 1)
	st := follow(t, "http://"+ln.Addr().String(), EventsOptions{Connected: func() { connected <- struct{}{} }})
	<-connected
	time.Sleep(200 * time.Millisecond) // four read timeouts
	var logs logBuffer
	logEviction(eventLogger(s, &logs), 1)
	if ev := st.next(t); ev.Seq != 1 {
		t.Fatalf("event %d after the read timeout; want 1", ev.Seq)
	}
}
