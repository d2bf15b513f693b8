package admin

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/balancer/tcpproxy"
	"github.com/vigil-proxy/vigil/balancer/tlsterm"
	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/metrics"
	"github.com/vigil-proxy/vigil/internal/state"
	"github.com/vigil-proxy/vigil/internal/tlsconf"
)

var (
	stringLiteral = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	rangeSelector = regexp.MustCompile(`\[[^\]]*\]`)
	offset        = regexp.MustCompile(`\boffset\s+-?[0-9][0-9a-z]*`)
	grouping      = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	selector      = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}`)
	matcher       = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	identifier    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	labelValues   = regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)
)

var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "offset": true, "and": true, "or": true, "unless": true, "atan2": true, "inf": true, "nan": true,
}

// promqlRefs is what a PromQL expression refers to.
type promqlRefs struct {
	metrics []string
	// matchers are the label names matched per metric name.
	matchers map[string][]string
	// grouped are the label names of by/without/on/ignoring clauses.
	grouped []string
}

// parsePromQL finds the metric names and label names an expression uses.
// It is no full parser: it blanks out string literals, range selectors
// and grouping clauses, reads label matchers, and takes every remaining
// identifier that is not a keyword or followed by "(" (a function or an
// aggregation) as a metric name.
func parsePromQL(expr string) promqlRefs {
	refs := promqlRefs{matchers: map[string][]string{}}
	expr = stringLiteral.ReplaceAllString(expr, `""`)
	expr = rangeSelector.ReplaceAllString(expr, "")
	expr = offset.ReplaceAllString(expr, "")
	for _, m := range grouping.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(m[2], ",") {
			if l = strings.TrimSpace(l); l != "" {
				refs.grouped = append(refs.grouped, l)
			}
		}
	}
	expr = grouping.ReplaceAllString(expr, " ")
	for _, m := range selector.FindAllStringSubmatch(expr, -1) {
		for _, lm := range matcher.FindAllStringSubmatch(m[2], -1) {
			refs.matchers[m[1]] = append(refs.matchers[m[1]], lm[1])
		}
	}
	expr = selector.ReplaceAllString(expr, "$1 ")
	for _, loc := range identifier.FindAllStringIndex(expr, -1) {
		name := expr[loc[0]:loc[1]]
		rest := strings.TrimLeft(expr[loc[1]:], " \t\n")
		if promqlKeywords[name] || strings.HasPrefix(rest, "(") || (loc[0] > 0 && expr[loc[0]-1] == '$') {
			continue
		}
		if !slices.Contains(refs.metrics, name) {
			refs.metrics = append(refs.metrics, name)
		}
	}
	return refs
}

func TestParsePromQL(t *testing.T) {
	for _, tc := range []struct {
		expr     string
		metrics  []string
		matchers map[string][]string
		grouped  []string
	}{
		{expr: `up`, metrics: []string{"up"}},
		{
			expr:     `sum by (cluster, reason) (increase(vigil_evictions_total{cluster=~"$cluster"}[$__rate_interval]))`,
			metrics:  []string{"vigil_evictions_total"},
			matchers: map[string][]string{"vigil_evictions_total": {"cluster"}},
			grouped:  []string{"cluster", "reason"},
		},
		{
			expr: `histogram_quantile(0.99, sum by (cluster, le) (rate(x_bucket{cluster=~"a|b", code!="OK"}[5m]))) / ` +
				`sum without(instance) (rate(y_count [1h] offset 1d)) > bool 0 and on(cluster) z`,
			metrics:  []string{"x_bucket", "y_count", "z"},
			matchers: map[string][]string{"x_bucket": {"cluster", "code"}},
			grouped:  []string{"cluster", "le", "instance", "cluster"},
		},
		{
			expr:     `{__name__="weird", job="by (x)"} + rate(foo:bar[5m])`,
			metrics:  []string{"foo:bar"},
			matchers: map[string][]string{"": {"__name__", "job"}},
		},
		{expr: `max(vigil_config_last_reload_successful)`, metrics: []string{"vigil_config_last_reload_successful"}},
	} {
		got := parsePromQL(tc.expr)
		if !slices.Equal(got.metrics, tc.metrics) {
			t.Errorf("%s: metrics %v; want %v", tc.expr, got.metrics, tc.metrics)
		}
		if tc.matchers == nil {
			tc.matchers = map[string][]string{}
		}
		if len(got.matchers) != len(tc.matchers) {
			t.Errorf("%s: matchers %v; want %v", tc.expr, got.matchers, tc.matchers)
		}
		for k, v := range tc.matchers {
			if !slices.Equal(got.matchers[k], v) {
				t.Errorf("%s: matchers of %q: %v; want %v", tc.expr, k, got.matchers[k], v)
			}
		}
		if !slices.Equal(got.grouped, tc.grouped) {
			t.Errorf("%s: grouped %v; want %v", tc.expr, got.grouped, tc.grouped)
		}
	}
}

// exportedSeries gathers a Metrics whose every hook has been called: the
// families and the label names each one has, histograms also under their
// _bucket, _sum and _count names.
func exportedSeries(t *testing.T) map[string][]string {
	t.Helper()
	s := newStore(t)
	seed(t, s)
	err := s.Update(func(w state.Writer) error {
		for _, l := range []config.Listener{
			{Name: "api", Protocol: config.ProtocolGRPC, Cluster: "orders"},
			{Name: "raw", Protocol: config.ProtocolTCP, Cluster: "orders"},
		} {
			if err := w.UpsertListener(&state.Listener{Listener: l, Bound: "127.0.0.1:1"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(metrics.Options{Store: s})
	m.Probe("orders", "127.0.0.1:50051", checker.Result{OK: true, Latency: time.Millisecond})
	m.Probe("orders", "127.0.0.1:50052", checker.Result{Reason: "NOT_SERVING", Cause: checker.CauseAnswer, Latency: time.Millisecond})
	for _, kind := range []event.Kind{event.EndpointAdmitted, event.EndpointEvicted, event.EndpointReadmitted, event.PickerBuilt} {
		m.Handle([]event.Event{{Kind: kind, Cluster: "orders", Address: "127.0.0.1:50052", Status: checker.Status{Reason: "NOT_SERVING"}}})
	}
	m.Handle([]event.Event{{Kind: event.EndpointEvicted, Cluster: "orders", Address: "127.0.0.1:50051", Outlier: true,
		Status: checker.Status{Reason: "UNAVAILABLE"}, Ejection: event.Ejection{Reason: "UNAVAILABLE"}}})
	m.Reload(true)
	g := m.GRPC("api")
	g.ConnOpened()
	g.RPCStarted("orders", "127.0.0.1:50051")
	g.RPCFinished("orders", "", "127.0.0.1:50051", "OK", time.Millisecond)
	g.RPCRetried("orders", "127.0.0.1:50052")
	g.RPCReplayed("orders", "127.0.0.1:50052", "goaway")
	tc := m.TCP("raw")
	tc.ConnectionOpened("orders", "127.0.0.1:50051")
	tc.ConnectionClosed(tcpproxy.ConnStats{Cluster: "orders", Endpoint: "127.0.0.1:50051", Outcome: tcpproxy.OutcomeOK})
	m.TLSCertificates("api", []tlsconf.Cert{{File: "tls.crt", NotAfter: time.Now().Add(time.Hour)}})
	m.TLSHandshake("api")(tlsterm.ResultOK, nil)
	m.DiscoveryStarted("orders", "dns")
	m.DiscoveryUpdate("orders", "dns", metrics.DiscoveryChanged, 2)
	m.AccessLogDropped("api")()

	mfs, err := m.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, mf := range mfs {
		var labels []string
		for _, series := range mf.GetMetric() {
			for _, lp := range series.GetLabel() {
				if !slices.Contains(labels, lp.GetName()) {
					labels = append(labels, lp.GetName())
				}
			}
		}
		out[mf.GetName()] = labels
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			out[mf.GetName()+"_bucket"] = append(slices.Clone(labels), "le")
			out[mf.GetName()+"_sum"] = labels
			out[mf.GetName()+"_count"] = labels
		}
	}
	for _, name := range metrics.Names() {
		if _, ok := out[name]; !ok {
			t.Fatalf("exercised metrics lack %s: exportedSeries must call more hooks", name)
		}
	}
	return out
}

// dashboardQueries returns every PromQL expression of the dashboard by
// where it is, and its template variables' label_values queries.
func dashboardQueries(t *testing.T) (exprs map[string]string, variables []string) {
	t.Helper()
	var d struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			ID      int    `json:"id"`
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(dashboard, &d); err != nil {
		t.Fatalf("dashboards/vigil.json: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Fatal("dashboard has no uid or title")
	}
	exprs = map[string]string{}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %s has no expr", p.Title, tg.RefID)
			}
			exprs[p.Title+"/"+tg.RefID] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		variables = append(variables, q.Query)
	}
	return exprs, variables
}

// TestDashboardQueriesExist checks that every metric the dashboard
// queries is exported, with the labels the queries match and group on.
func TestDashboardQueriesExist(t *testing.T) {
	exported := exportedSeries(t)
	exprs, variables := dashboardQueries(t)
	if len(exprs) < 10 {
		t.Fatalf("only %d queries found: is the dashboard parsed right?", len(exprs))
	}
	queried := map[string]bool{}
	for where, expr := range exprs {
		refs := parsePromQL(expr)
		if len(refs.metrics) == 0 {
			t.Errorf("%s: no metric in %s", where, expr)
		}
		var labels []string
		for _, name := range refs.metrics {
			have, ok := exported[name]
			if !ok {
				t.Errorf("%s: metric %s is not exported (query: %s)", where, name, expr)
				continue
			}
			queried[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")] = true
			labels = append(labels, have...)
			for _, l := range refs.matchers[name] {
				if !slices.Contains(have, l) {
					t.Errorf("%s: %s has no label %q (query: %s)", where, name, l, expr)
				}
			}
		}
		if len(refs.matchers[""]) > 0 {
			t.Errorf("%s: selector without a metric name in %s", where, expr)
		}
		for _, l := range refs.grouped {
			if !slices.Contains(labels, l) {
				t.Errorf("%s: groups on %q, which none of %v has", where, l, refs.metrics)
			}
		}
	}
	if len(variables) == 0 {
		t.Error("the dashboard has no cluster variable")
	}
	for _, q := range variables {
		m := labelValues.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("variable query %q is not label_values(metric, label)", q)
			continue
		}
		if have, ok := exported[m[1]]; !ok || !slices.Contains(have, m[2]) {
			t.Errorf("variable query %q: %s with label %s is not exported", q, m[1], m[2])
		}
	}
	// What the issue asks the dashboard to show.
	for _, name := range []string{"vigil_evictions_total", "vigil_endpoint_healthy", "vigil_upstream_rq_total",
		"vigil_upstream_rq_duration_seconds"} {
		if !queried[name] {
			t.Errorf("the dashboard does not query %s", name)
		}
	}
}
