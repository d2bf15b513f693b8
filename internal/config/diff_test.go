package config

import (
	"log/slog"
	"reflect"
	"strings"
	"testing"
)

const diffBase = `
admin: {address: "127.0.0.1:9901"}
log: {format: text, level: info}
shutdown: {drain_delay: 0s, timeout: 10s}
listeners:
  - {name: api, address: "127.0.0.1:8080", cluster: orders}
  - {name: raw, address: "127.0.0.1:8081", cluster: orders, protocol: tcp}
clusters:
  - name: orders
    endpoints:
      - {address: "10.0.0.1:80"}
      - {address: "10.0.0.2:80", weight: 2}
    health_check: {interval: 2s}
  - name: users
    endpoints: [{address: "10.0.1.1:80"}]
`

func mustParse(t testing.TB, data string) *Config {
	t.Helper()
	cfg, err := Parse("t.yaml", []byte(data))
	if err != nil {
		t.Fatalf("%v\nin:\n%s", err, data)
	}
	return cfg
}

func TestDiff(t *testing.T) {
	edit := func(pairs ...string) string {
		s := diffBase
		for i := 0; i+1 < len(pairs); i += 2 {
			if !strings.Contains(s, pairs[i]) {
				panic("diff test edit does not apply: " + pairs[i])
			}
			s = strings.Replace(s, pairs[i], pairs[i+1], 1)
		}
		return s
	}
	for _, tc := range []struct {
		name string
		new  string
		want Changes
	}{
		{name: "identical", new: diffBase},
		{
			name: "moved and reordered is no change",
			new: `
# comment shifting every line
clusters:
  - name: users
    endpoints: [{address: "10.0.1.1:80", weight: 1}]
  - name: orders
    health_check: {interval: 2s, timeout: 1s}
    endpoints:
      - {address: "10.0.0.2:80", weight: 2}
      - {address: "10.0.0.1:80"}
listeners:
  - {name: raw, address: "127.0.0.1:8081", cluster: orders, protocol: tcp}
  - {name: api, address: "127.0.0.1:8080", cluster: orders, protocol: grpc}
`,
		},
		{
			name: "listeners added, removed, changed",
			new: edit(
				`  - {name: raw, address: "127.0.0.1:8081", cluster: orders, protocol: tcp}`,
				`  - {name: raw2, address: "127.0.0.1:8082", cluster: users, protocol: tcp}`,
				`{name: api, address: "127.0.0.1:8080", cluster: orders}`,
				`{name: api, address: "127.0.0.1:8080", cluster: orders, max_connections: 5}`),
			want: Changes{ListenersAdded: []string{"raw2"}, ListenersRemoved: []string{"raw"}, ListenersChanged: []string{"api"}},
		},
		{
			name: "listener retargeted",
			new:  edit(`{name: api, address: "127.0.0.1:8080", cluster: orders}`, `{name: api, address: "127.0.0.1:8080", cluster: users}`),
			want: Changes{ListenersChanged: []string{"api"}},
		},
		{
			name: "clusters added and removed",
			new: edit(`  - name: users
    endpoints: [{address: "10.0.1.1:80"}]`, `  - name: billing
    endpoints: [{address: "10.0.2.1:80"}]`),
			want: Changes{ClustersAdded: []string{"billing"}, ClustersRemoved: []string{"users"}},
		},
		{
			name: "endpoints added, removed, reweighted",
			new: edit(`      - {address: "10.0.0.1:80"}
      - {address: "10.0.0.2:80", weight: 2}`, `      - {address: "10.0.0.2:80", weight: 3}
      - {address: "10.0.0.3:80"}
      - {address: "10.0.0.4:80"}`),
			want: Changes{Clusters: []ClusterChanges{{
				Name:             "orders",
				EndpointsAdded:   []string{"10.0.0.3:80", "10.0.0.4:80"},
				EndpointsRemoved: []string{"10.0.0.1:80"},
				WeightsChanged:   []string{"10.0.0.2:80"},
			}}},
		},
		{
			name: "policy and health check",
			new: edit(`  - name: orders
    endpoints:`, `  - name: orders
    lb_policy: random
    endpoints:`,
				`  - name: users
    endpoints: [{address: "10.0.1.1:80"}]`, `  - name: users
    panic_threshold: 10
    health_check: {mode: tcp}
    endpoints: [{address: "10.0.1.1:80"}]`),
			want: Changes{Clusters: []ClusterChanges{
				{Name: "orders", PolicyChanged: true},
				{Name: "users", PolicyChanged: true, HealthCheckChanged: true},
			}},
		},
		{
			name: "health check only",
			new:  edit(`health_check: {interval: 2s}`, `health_check: {interval: 2s, jitter: 20%}`),
			want: Changes{Clusters: []ClusterChanges{{Name: "orders", HealthCheckChanged: true}}},
		},
		{
			name: "admin, log, shutdown",
			new: edit(`admin: {address: "127.0.0.1:9901"}`, `admin: {address: ""}`,
				`log: {format: text, level: info}`, `log: {format: text, level: debug}`,
				`shutdown: {drain_delay: 0s, timeout: 10s}`, `shutdown: {drain_delay: 1s, timeout: 10s}`),
			want: Changes{AdminChanged: true, LogChanged: true, ShutdownChanged: true},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, new := mustParse(t, diffBase), mustParse(t, tc.new)
			got := Diff(old, new)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Diff =\n%+v\nwant\n%+v", got, tc.want)
			}
			if got.Empty() != reflect.DeepEqual(tc.want, Changes{}) {
				t.Errorf("Empty() = %v", got.Empty())
			}
		})
	}
}

func TestDiffFromNothing(t *testing.T) {
	cfg := mustParse(t, diffBase)
	ch := Diff(nil, cfg)
	if !reflect.DeepEqual(ch.ListenersAdded, []string{"api", "raw"}) || !reflect.DeepEqual(ch.ClustersAdded, []string{"orders", "users"}) ||
		!ch.AdminChanged || !ch.LogChanged || !ch.ShutdownChanged {
		t.Errorf("Diff(nil, cfg) = %+v", ch)
	}
	ch = Diff(cfg, nil)
	if !reflect.DeepEqual(ch.ListenersRemoved, []string{"api", "raw"}) || !reflect.DeepEqual(ch.ClustersRemoved, []string{"orders", "users"}) {
		t.Errorf("Diff(cfg, nil) = %+v", ch)
	}
}

func attrMap(attrs []slog.Attr) map[string]any {
	m := make(map[string]any, len(attrs))
	for _, a := range attrs {
		m[a.Key] = a.Value.Any()
	}
	return m
}

func TestChangesAttrs(t *testing.T) {
	ch := Changes{
		ListenersAdded:   []string{"a"},
		ListenersChanged: []string{"b", "c"},
		ClustersRemoved:  []string{"x"},
		Clusters: []ClusterChanges{
			{Name: "p", EndpointsAdded: []string{"1", "2"}, EndpointsRemoved: []string{"3"}},
			{Name: "q", EndpointsRemoved: []string{"4"}, WeightsChanged: []string{"5"}},
		},
		LogChanged: true,
	}
	want := map[string]any{
		"listeners_added": int64(1), "listeners_removed": int64(0), "listeners_changed": int64(2),
		"clusters_added": int64(0), "clusters_removed": int64(1), "clusters_changed": int64(2),
		"endpoints_added": int64(2), "endpoints_removed": int64(2), "weights_changed": int64(1),
		"log_changed": true,
	}
	if got := attrMap(ch.Attrs()); !reflect.DeepEqual(got, want) {
		t.Errorf("Attrs = %v\nwant %v", got, want)
	}

	cfg := mustParse(t, diffBase)
	cfg.File = "vigil.yaml"
	wantCfg := map[string]any{"file": "vigil.yaml", "listeners": int64(2), "clusters": int64(2), "endpoints": int64(3)}
	if got := attrMap(cfg.Attrs()); !reflect.DeepEqual(got, wantCfg) {
		t.Errorf("Config.Attrs = %v, want %v", got, wantCfg)
	}
}
