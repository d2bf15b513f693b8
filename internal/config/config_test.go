package config

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/checker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// errorLines parses data as t.yaml and returns the error lines (nil when it
// parses).
func errorLines(t *testing.T, data string) []string {
	t.Helper()
	cfg, err := Parse("t.yaml", []byte(data))
	if err == nil {
		if cfg == nil {
			t.Fatal("Parse returned neither a config nor an error")
		}
		return nil
	}
	if cfg != nil {
		t.Errorf("Parse returned a config along with an error")
	}
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error %T is not an ErrorList: %v", err, err)
	}
	return strings.Split(err.Error(), "\n")
}

func checkLines(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestExampleValidates(t *testing.T) {
	cfg, err := Load("../../config.example.yaml")
	if err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	// The values the assignment fixes for `make run`.
	if cfg.Admin.Address != "127.0.0.1:9901" || cfg.Log != (Log{Format: LogText, Level: "info"}) ||
		cfg.Shutdown != (Shutdown{DrainDelay: 0, Timeout: 10 * time.Second}) {
		t.Errorf("admin/log/shutdown = %+v %+v %+v", cfg.Admin, cfg.Log, cfg.Shutdown)
	}
	if len(cfg.Listeners) != 2 ||
		cfg.Listeners[0].Name != "api" || cfg.Listeners[0].Protocol != ProtocolGRPC || cfg.Listeners[0].Address != "127.0.0.1:8080" ||
		cfg.Listeners[1].Name != "api-tcp" || cfg.Listeners[1].Protocol != ProtocolTCP || cfg.Listeners[1].Address != "127.0.0.1:8081" ||
		cfg.Listeners[0].Cluster != "demo" || cfg.Listeners[1].Cluster != "demo" {
		t.Errorf("listeners = %+v", cfg.Listeners)
	}
	if len(cfg.Clusters) != 2 || len(cfg.Clusters[0].Endpoints) != 3 || cfg.Clusters[1].Name != "orders" {
		t.Fatalf("clusters = %+v", cfg.Clusters)
	}
	// The demo routes a second service through the grpc listener.
	if r := cfg.Listeners[0].Routes; len(r) != 1 || r[0].Match.Service != "orders.v1.Orders" || r[0].Cluster != "orders" || len(cfg.Warnings) != 0 {
		t.Errorf("routes = %+v, warnings %v", r, cfg.Warnings)
	}
	c := cfg.Clusters[0]
	want := checker.Config{Mode: checker.ModeCheck, Interval: time.Second, Timeout: 500 * time.Millisecond, Jitter: 0.1,
		Thresholds: checker.Thresholds{Unhealthy: 3, Healthy: 2}, OnUnimplemented: checker.UnimplementedEvict, Liveness: checker.LivenessKeepalive}
	if c.Name != "demo" || c.LBPolicy != RoundRobin || c.PanicThreshold != 50 || c.HealthCheck != want {
		t.Errorf("cluster = %+v", c)
	}
	for i, ep := range c.Endpoints {
		if wantAddr := "127.0.0.1:5005" + string(rune('1'+i)); ep.Address != wantAddr || ep.Weight != 1 {
			t.Errorf("endpoint %d = %+v, want %s weight 1", i, ep, wantAddr)
		}
	}
	// Every field of the schema appears in the example.
	data, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, keys := range [][]string{topKeys, adminKeys, logKeys, shutdownKeys, listenerKeys, routeKeys, accessLogKeys, listenerTLSKeys, certPairKeys, clusterKeys, clusterTLSKeys, outlierKeys, slowStartKeys, hashKeys, endpointKeys, discoveryKeys, kubernetesKeys, healthCheckKeys} {
		for _, k := range keys {
			if !strings.Contains(string(data), k+":") {
				t.Errorf("config.example.yaml lacks field %q", k)
			}
		}
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse("min.yaml", []byte(`
listeners:
  - name: api
    address: 127.0.0.1:0
    cluster: orders
clusters:
  - name: orders
    endpoints:
      - address: 127.0.0.1:50051
`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		File:     "min.yaml",
		Admin:    Admin{Address: "127.0.0.1:9901"},
		Log:      Log{Format: LogText, Level: "info"},
		Shutdown: Shutdown{DrainDelay: 0, Timeout: 10 * time.Second},
		Listeners: []Listener{{
			Name: "api", Address: "127.0.0.1:0", Protocol: ProtocolGRPC, Cluster: "orders",
			MaxConcurrentStreams: 100, MaxMessageSize: 32 << 20, IdleTimeout: time.Hour, MaxConnections: 10000,
			AccessLog: AccessLog{Format: LogJSON, Buffer: 4096},
			Pos:       Pos{Line: 3, Col: 5},
		}},
		Clusters: []Cluster{{
			Name: "orders", LBPolicy: RoundRobin, PanicThreshold: 50,
			Endpoints: []Endpoint{{Address: "127.0.0.1:50051", Weight: 1, Pos: Pos{Line: 9, Col: 9}}},
			HealthCheck: checker.Config{
				Mode: checker.ModeCheck, Service: "", Interval: 5 * time.Second, Timeout: time.Second, Jitter: 0.1,
				Thresholds: checker.Thresholds{Unhealthy: 3, Healthy: 2}, OnUnimplemented: checker.UnimplementedEvict, Liveness: checker.LivenessKeepalive,
			},
			Pos: Pos{Line: 7, Col: 5},
		}},
	}
	if !equalConfig(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
}

func equalConfig(a, b *Config) bool {
	if a.File != b.File || a.Admin != b.Admin || a.Log != b.Log || a.Shutdown != b.Shutdown ||
		len(a.Listeners) != len(b.Listeners) || len(a.Clusters) != len(b.Clusters) {
		return false
	}
	for i := range a.Listeners {
		if !reflect.DeepEqual(a.Listeners[i], b.Listeners[i]) {
			return false
		}
	}
	for i := range a.Clusters {
		x, y := a.Clusters[i], b.Clusters[i]
		if x.Name != y.Name || x.LBPolicy != y.LBPolicy || x.PanicThreshold != y.PanicThreshold ||
			x.HealthCheck != y.HealthCheck || x.Pos != y.Pos || len(x.Endpoints) != len(y.Endpoints) {
			return false
		}
		for j := range x.Endpoints {
			if x.Endpoints[j] != y.Endpoints[j] {
				return false
			}
		}
	}
	return true
}

func TestAdminAddress(t *testing.T) {
	base := "listeners: []\n"
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"absent section", base, "127.0.0.1:9901"},
		{"empty section", base + "admin:\n", "127.0.0.1:9901"},
		{"absent key", base + "admin: {}\n", "127.0.0.1:9901"},
		{"explicit empty disables", base + "admin:\n  address: \"\"\n", ""},
		{"set", base + "admin:\n  address: 0.0.0.0:9999\n", "0.0.0.0:9999"},
		{"ephemeral", base + "admin:\n  address: 127.0.0.1:0\n", "127.0.0.1:0"},
		{"all interfaces", base + "admin:\n  address: :9901\n", ":9901"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("t.yaml", []byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Admin.Address != tc.want {
				t.Errorf("admin.address = %q, want %q", cfg.Admin.Address, tc.want)
			}
		})
	}
}

// TestValues checks that each field's accepted spellings decode to the
// value meant.
func TestValues(t *testing.T) {
	parse := func(t *testing.T, listener, cluster, hc string) *Config {
		t.Helper()
		cfg, err := Parse("t.yaml", []byte(`
listeners:
  - {name: l, address: "127.0.0.1:0", cluster: c`+listener+`}
clusters:
  - name: c
    endpoints: [{address: "h:1"}]`+cluster+`
    health_check: {mode: check`+hc+`}
`))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	for _, tc := range []struct {
		listener string
		want     int
	}{
		{", max_message_size: 1024", 1024},
		{", max_message_size: 1KiB", 1024},
		{", max_message_size: 4MiB", 4 << 20},
		{", max_message_size: 512KiB", 512 << 10},
		{", max_message_size: 1GiB", 1 << 30},
		{", max_message_size: 2048B", 2048},
		{", max_message_size: 0x1000", 4096},
	} {
		if got := parse(t, tc.listener, "", "").Listeners[0].MaxMessageSize; got != tc.want {
			t.Errorf("%s: MaxMessageSize = %d, want %d", tc.listener, got, tc.want)
		}
	}
	l := parse(t, ", protocol: tcp, max_concurrent_streams: 1, idle_timeout: 90s, max_connections: 0", "", "").Listeners[0]
	if l.Protocol != ProtocolTCP || l.MaxConcurrentStreams != 1 || l.IdleTimeout != 90*time.Second || l.MaxConnections != 0 {
		t.Errorf("listener = %+v", l)
	}
	c := parse(t, "", "\n    lb_policy: least_request\n    panic_threshold: 0",
		`, service: "orders.v1.Orders", interval: 250ms, timeout: 250ms, jitter: 12.5%, unhealthy_threshold: 1, healthy_threshold: 7, on_unimplemented: serve, liveness: check`).Clusters[0]
	want := checker.Config{Mode: checker.ModeCheck, Service: "orders.v1.Orders", Interval: 250 * time.Millisecond, Timeout: 250 * time.Millisecond,
		Jitter: 0.125, Thresholds: checker.Thresholds{Unhealthy: 1, Healthy: 7}, OnUnimplemented: checker.UnimplementedServe, Liveness: checker.LivenessCheck}
	if c.LBPolicy != LeastRequest || c.PanicThreshold != 0 || c.HealthCheck != want {
		t.Errorf("cluster = %+v", c)
	}
	if j := parse(t, "", "", ", jitter: 0%").Clusters[0].HealthCheck.Jitter; j != 0 {
		t.Errorf("jitter 0%% = %v", j)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "empty file",
			yaml: "",
			want: []string{"t.yaml:1:1: the file holds no configuration (it is empty or only comments)"},
		},
		{
			name: "only comments",
			yaml: "# nothing\n\n   # here\n",
			want: []string{"t.yaml:1:1: the file holds no configuration (it is empty or only comments)"},
		},
		{
			name: "empty document",
			yaml: "# c\n---\n",
			want: []string{"t.yaml:2:1: the file holds no configuration (the document is empty)"},
		},
		{
			name: "two documents",
			yaml: "log: {level: info}\n---\nlog: {level: loud}\n",
			want: []string{"t.yaml:2:1: a second YAML document: a configuration file holds exactly one"},
		},
		{
			name: "syntax error",
			yaml: "listeners:\n  - name: a\n   address: x\n",
			// yaml.v3 places this at the start of the list that holds the
			// broken item.
			want: []string{"t.yaml:2:1: invalid YAML: did not find expected '-' indicator"},
		},
		{
			name: "syntax error at the top level",
			yaml: "listeners: []\nclusters: []\n- a\n",
			want: []string{"t.yaml:3:1: invalid YAML: did not find expected key"},
		},
		{
			name: "scanner error",
			yaml: "log:\n  level: info\n    format: text\n",
			want: []string{"t.yaml:3:1: invalid YAML: mapping values are not allowed in this context"},
		},
		{
			name: "tab indentation",
			yaml: "log:\n\tlevel: info\n",
			want: []string{"t.yaml:2:1: invalid YAML: found character that cannot start any token (a tab: YAML indents with spaces)"},
		},
		{
			name: "unknown anchor",
			yaml: "log: {level: info}\nlisteners: *nope\n",
			want: []string{"t.yaml:2:12: invalid YAML: alias *nope refers to no anchor (&nope) defined before it"},
		},
		{
			name: "root not a mapping",
			yaml: "- a\n- b\n",
			want: []string{"t.yaml:1:1: must be a mapping, not a list"},
		},
		{
			name: "unknown fields with suggestions",
			yaml: `
listener: []
clusters:
  - name: c
    lb-policy: random
    endpoints: [{address: "h:1", wieght: 2}]
    health_check: {intervall: 1s, Timeout: 1s, frobnicate: 1}
`,
			want: []string{
				`t.yaml:2:1: listener: unknown field "listener"; did you mean "listeners"?`,
				`t.yaml:5:5: clusters[0].lb-policy: unknown field "lb-policy"; did you mean "lb_policy"?`,
				`t.yaml:6:34: clusters[0].endpoints[0].wieght: unknown field "wieght"; did you mean "weight"?`,
				`t.yaml:7:20: clusters[0].health_check.intervall: unknown field "intervall"; did you mean "interval"?`,
				`t.yaml:7:35: clusters[0].health_check.Timeout: unknown field "Timeout"; did you mean "timeout"?`,
				`t.yaml:7:48: clusters[0].health_check.frobnicate: unknown field "frobnicate"`,
			},
		},
		{
			name: "odd keys stay on one line",
			yaml: "log:\n  \"a\\nb\": 1\n  ? [x]\n  : 2\n  \"\": 3\n",
			want: []string{
				`t.yaml:2:3: log."a\nb": unknown field "a\nb"`,
				`t.yaml:3:5: log: a key must be a field name, not a list`,
				`t.yaml:5:3: log."": unknown field ""`,
			},
		},
		{
			name: "odd values stay on one line",
			yaml: "listeners: [{name: a, address: \":0\", cluster: c, max_connections: !!int \"1\\n2\"}]\nclusters: [{name: c, endpoints: [\"x\\ny\"]}]\n",
			want: []string{
				`t.yaml:1:67: listeners[0].max_connections: must be an integer from 0 to 2147483647, not "1\n2"`,
				`t.yaml:2:34: clusters[0].endpoints[0]: must be a mapping like {address: "x\ny"}, not the string "x\ny"`,
			},
		},
		{
			name: "duplicate keys",
			yaml: "log:\n  level: info\n  level: debug\n",
			want: []string{`t.yaml:3:3: log.level: duplicate field "level" (first at line 2)`},
		},
		{
			name: "wrong YAML types",
			yaml: `
admin: 9901
log: [text]
shutdown: {timeout: {s: 1}}
listeners:
  name: a
clusters:
  - name: 7
    panic_threshold: "50"
    endpoints: {address: "h:1"}
    health_check: {service: true, unhealthy_threshold: 2.0, jitter: 10}
`,
			want: []string{
				`t.yaml:2:8: admin: must be a mapping, not the number 9901`,
				`t.yaml:3:6: log: must be a mapping, not a list`,
				`t.yaml:4:21: shutdown.timeout: must be a duration like 5s or 250ms, not a mapping`,
				`t.yaml:6:3: listeners: must be a list, not a mapping`,
				`t.yaml:8:11: clusters[0].name: must be a string, not the number 7 (quote it to use it as text)`,
				`t.yaml:9:22: clusters[0].panic_threshold: must be an integer, not the string "50"`,
				`t.yaml:10:16: clusters[0].endpoints: must be a list, not a mapping`,
				`t.yaml:11:29: clusters[0].health_check.service: must be a string, not the boolean true (quote it to use it as text)`,
				`t.yaml:11:56: clusters[0].health_check.unhealthy_threshold: must be an integer, not the number 2.0`,
				`t.yaml:11:69: clusters[0].health_check.jitter: must be a percentage like 10%, not the number 10`,
			},
		},
		{
			name: "missing required fields and empty values",
			yaml: `
listeners:
  - protocol: tcp
  - name: ""
    address: "127.0.0.1:1"
    cluster:
clusters:
  - endpoints:
  - name: b
admin:
  address:
`,
			want: []string{
				`t.yaml:3:5: listeners[0].name: missing required field`,
				`t.yaml:3:5: listeners[0].address: missing required field (host:port to listen on)`,
				`t.yaml:3:5: listeners[0].cluster: missing required field (the cluster this listener forwards to, or routes)`,
				`t.yaml:4:11: listeners[1].name: must not be empty`,
				`t.yaml:6:13: listeners[1].cluster: missing value: must be a string`,
				`t.yaml:8:5: clusters[0].name: missing required field`,
				`t.yaml:8:15: clusters[0].endpoints: a cluster needs at least one endpoint, or discovery`,
				`t.yaml:9:5: clusters[1].endpoints: missing required field: a cluster needs at least one endpoint, or discovery`,
				`t.yaml:11:11: admin.address: missing value: must be host:port, or "" to disable the admin server`,
			},
		},
		{
			name: "duplicates and references",
			yaml: `
admin: {address: "127.0.0.1:9000"}
listeners:
  - {name: a, address: "127.0.0.1:8080", cluster: orders}
  - {name: a, address: "127.0.0.1:8080", cluster: order}
  - {name: b, address: "127.0.0.1:9000", cluster: payments}
  - {name: c, address: "127.0.0.1:0", cluster: orders}
  - {name: d, address: "127.0.0.1:0", cluster: orders}
  - {name: e, address: "[::1]:8080", cluster: orders}
  - {name: f, address: "[0:0::1]:8080", cluster: orders}
clusters:
  - name: orders
    endpoints:
      - address: 10.0.0.1:80
      - address: 10.0.0.2:80
      - address: 10.0.0.1:80
      - address: Backend.example:80
      - address: backend.example.:80
  - name: orders
    endpoints: [{address: "10.0.0.1:80"}]
`,
			want: []string{
				`t.yaml:5:12: listeners[1].name: duplicate listener name "a" (first at line 4)`,
				`t.yaml:5:24: listeners[1].address: address "127.0.0.1:8080" is already used by listeners[0].address (line 4)`,
				`t.yaml:5:51: listeners[1].cluster: unknown cluster "order"; did you mean "orders"?`,
				`t.yaml:6:24: listeners[2].address: address "127.0.0.1:9000" is already used by admin.address (line 2)`,
				`t.yaml:6:51: listeners[2].cluster: unknown cluster "payments"`,
				`t.yaml:10:24: listeners[6].address: address "[0:0::1]:8080" is already used by listeners[5].address (line 9)`,
				`t.yaml:16:18: clusters[0].endpoints[2].address: duplicate endpoint "10.0.0.1:80" in this cluster (first at line 14)`,
				`t.yaml:18:18: clusters[0].endpoints[4].address: duplicate endpoint "backend.example.:80" in this cluster (first at line 17)`,
				`t.yaml:19:11: clusters[1].name: duplicate cluster name "orders" (first at line 12)`,
			},
		},
		{
			name: "bad addresses",
			yaml: `
admin: {address: "localhost"}
listeners:
  - {name: a, address: "http://127.0.0.1:80", cluster: c}
  - {name: b, address: "127.0.0.1:http", cluster: c}
  - {name: c, address: "::1:80", cluster: c}
clusters:
  - name: c
    endpoints:
      - address: ":80"
      - address: "h:0"
      - address: "h:65536"
      - address: "h:-1"
      - address: "300.1.1.1:80"
      - address: "bad_host!:80"
      - address: "[::1]"
      - address: "[nope]:80"
      - address: "-h:80"
      - address: "h:65535"
      - address: "[::1]:1"
      - address: "dns-name.example.com:443"
`,
			want: []string{
				`t.yaml:2:18: admin.address: invalid address "localhost": must be host:port (missing port)`,
				`t.yaml:4:24: listeners[0].address: invalid address "http://127.0.0.1:80": must be host:port, not a URL`,
				`t.yaml:5:24: listeners[1].address: invalid address "127.0.0.1:http": port must be a number from 0 to 65535`,
				`t.yaml:6:24: listeners[2].address: invalid address "::1:80": an IPv6 address must be in brackets, like [::1]:8080`,
				`t.yaml:10:18: clusters[0].endpoints[0].address: invalid address ":80": missing host`,
				`t.yaml:11:18: clusters[0].endpoints[1].address: invalid address "h:0": port must be a number from 1 to 65535`,
				`t.yaml:12:18: clusters[0].endpoints[2].address: invalid address "h:65536": port must be a number from 1 to 65535`,
				`t.yaml:13:18: clusters[0].endpoints[3].address: invalid address "h:-1": port must be a number from 1 to 65535`,
				`t.yaml:14:18: clusters[0].endpoints[4].address: invalid address "300.1.1.1:80": "300.1.1.1" is not a valid IP address`,
				`t.yaml:15:18: clusters[0].endpoints[5].address: invalid address "bad_host!:80": "bad_host!" is not a valid host name`,
				`t.yaml:16:18: clusters[0].endpoints[6].address: invalid address "[::1]": missing :port after the IPv6 address`,
				`t.yaml:17:18: clusters[0].endpoints[7].address: invalid address "[nope]:80": "nope" in brackets is not an IPv6 address`,
				`t.yaml:18:18: clusters[0].endpoints[8].address: invalid address "-h:80": "-h" is not a valid host name`,
			},
		},
		{
			name: "durations",
			yaml: `
shutdown: {drain_delay: 0s, timeout: 0s}
listeners:
  - {name: a, address: ":0", cluster: c, idle_timeout: -1s}
clusters:
  - name: c
    endpoints: [{address: "h:1"}]
    health_check: {interval: 5, timeout: soon}
  - name: d
    endpoints: [{address: "h:1"}]
    health_check: {interval: 1s, timeout: 2s}
  - name: e
    endpoints: [{address: "h:1"}]
    health_check: {interval: 500ms}
  - name: f
    endpoints: [{address: "h:1"}]
    health_check: {interval: 0s, timeout: 2562048h}
`,
			want: []string{
				`t.yaml:2:38: shutdown.timeout: must be positive, not 0s`,
				`t.yaml:4:56: listeners[0].idle_timeout: must not be negative, not -1s`,
				`t.yaml:8:30: clusters[0].health_check.interval: invalid duration "5": a duration needs a unit, like 5s or 250ms`,
				`t.yaml:8:42: clusters[0].health_check.timeout: invalid duration "soon": use a Go duration like 5s, 250ms or 1m30s`,
				`t.yaml:17:30: clusters[3].health_check.interval: must be positive, not 0s`,
				`t.yaml:17:43: clusters[3].health_check.timeout: invalid duration "2562048h": use a Go duration like 5s, 250ms or 1m30s`,
			},
		},
		{
			name: "numbers and enums",
			yaml: `
log: {format: JSON, level: verbose}
listeners:
  - name: a
    address: ":0"
    cluster: c
    protocol: http
    max_concurrent_streams: 0
    max_message_size: 1023
    max_connections: -1
  - name: b
    address: ":0"
    cluster: c
    max_message_size: 4MB
    max_concurrent_streams: 4294967296
  - {name: c2, address: ":0", cluster: c, max_message_size: 2GiB}
clusters:
  - name: c
    lb_policy: weighted
    panic_threshold: 101
    endpoints:
      - {address: "h:1", weight: 0}
      - {address: "h:2", weight: 10001}
      - {address: "h:3", weight: 99999999999999999999}
    health_check:
      mode: grpc
      jitter: 100%
      unhealthy_threshold: 0
      healthy_threshold: -2
      on_unimplemented: ignore
      liveness: ping
`,
			want: []string{
				`t.yaml:2:15: log.format: must be one of text, json, not the string "JSON"; did you mean "json"?`,
				`t.yaml:2:28: log.level: must be one of debug, info, warn, error, not the string "verbose"`,
				`t.yaml:7:15: listeners[0].protocol: must be one of grpc, tcp, not the string "http"`,
				`t.yaml:8:29: listeners[0].max_concurrent_streams: must be from 1 to 4294967295, not 0`,
				`t.yaml:9:23: listeners[0].max_message_size: must be from 1KiB to 1GiB, not 1023`,
				`t.yaml:10:22: listeners[0].max_connections: must be at least 0, not -1`,
				`t.yaml:14:23: listeners[1].max_message_size: invalid size "4MB": unknown unit "MB" (use B, KiB, MiB or GiB)`,
				`t.yaml:15:29: listeners[1].max_concurrent_streams: must be from 1 to 4294967295, not 4294967296`,
				`t.yaml:16:61: listeners[2].max_message_size: must be from 1KiB to 1GiB, not 2GiB`,
				`t.yaml:19:16: clusters[0].lb_policy: must be one of round_robin, least_request, random, ring_hash, maglev, weighted_round_robin, not the string "weighted"`,
				`t.yaml:20:22: clusters[0].panic_threshold: must be from 0 to 100, not 101`,
				`t.yaml:22:34: clusters[0].endpoints[0].weight: must be from 1 to 10000, not 0`,
				`t.yaml:23:34: clusters[0].endpoints[1].weight: must be from 1 to 10000, not 10001`,
				`t.yaml:24:34: clusters[0].endpoints[2].weight: must be an integer from 1 to 10000, not 99999999999999999999`,
				`t.yaml:26:13: clusters[0].health_check.mode: must be one of check, watch, tcp, none, not the string "grpc"`,
				`t.yaml:27:15: clusters[0].health_check.jitter: must be at least 0% and less than 100%, not 100%`,
				`t.yaml:28:28: clusters[0].health_check.unhealthy_threshold: must be at least 1, not 0`,
				`t.yaml:29:26: clusters[0].health_check.healthy_threshold: must be at least 1, not -2`,
				`t.yaml:30:25: clusters[0].health_check.on_unimplemented: must be one of evict, serve, not the string "ignore"`,
				`t.yaml:31:17: clusters[0].health_check.liveness: must be one of keepalive, check, not the string "ping"`,
			},
		},
		{
			name: "bad names",
			yaml: `
listeners:
  - {name: "my api", address: ":0", cluster: "c/1"}
clusters:
  - name: "c/1"
    endpoints: ["h:1"]
`,
			want: []string{
				`t.yaml:3:12: listeners[0].name: invalid name "my api": use letters, digits, '-', '_' and '.'`,
				`t.yaml:3:46: listeners[0].cluster: invalid name "c/1": use letters, digits, '-', '_' and '.'`,
				`t.yaml:5:11: clusters[0].name: invalid name "c/1": use letters, digits, '-', '_' and '.'`,
				`t.yaml:6:17: clusters[0].endpoints[0]: must be a mapping like {address: "h:1"}, not the string "h:1"`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLines(t, errorLines(t, tc.yaml), tc.want)
		})
	}
}
