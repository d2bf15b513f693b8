package config

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/checker"
)

func TestAliasesAndMerges(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte(`
listeners:
  - &listener {name: a, address: ":0", cluster: one, protocol: tcp}
  - {<<: *listener, name: b}
clusters:
  - name: one
    endpoints: &eps
      - address: 10.0.0.1:80
      - {address: 10.0.0.2:80, weight: 3}
    health_check: &hc {mode: watch, interval: 2s, jitter: 5%}
  - name: two
    endpoints: *eps
    health_check: *hc
  - name: three
    endpoints: *eps
    health_check:
      <<: [*hc, {mode: tcp, timeout: 100ms}]
      interval: 3s
`))
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.Listeners[1]; l.Name != "b" || l.Protocol != ProtocolTCP || l.Cluster != "one" {
		t.Errorf("merged listener = %+v", l)
	}
	watch := checker.Config{Mode: checker.ModeWatch, Interval: 2 * time.Second, Timeout: checker.DefaultTimeout, Jitter: 0.05,
		Thresholds: checker.Thresholds{Unhealthy: 3, Healthy: 2}, OnUnimplemented: checker.UnimplementedEvict, Liveness: checker.LivenessKeepalive}
	if hc := cfg.Clusters[1].HealthCheck; hc != watch {
		t.Errorf("aliased health_check = %+v, want %+v", hc, watch)
	}
	// Own keys win over merged ones; the first merged mapping wins over later ones.
	merged := watch
	merged.Interval, merged.Timeout = 3*time.Second, 100*time.Millisecond
	if hc := cfg.Clusters[2].HealthCheck; hc != merged {
		t.Errorf("merged health_check = %+v, want %+v", hc, merged)
	}
	if eps := cfg.Clusters[2].Endpoints; len(eps) != 2 || eps[1].Weight != 3 {
		t.Errorf("aliased endpoints = %+v", eps)
	}
}

func TestMergeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{
			name: "merge of a scalar",
			yaml: "log: {<<: text}\n",
			want: []string{"t.yaml:1:11: log: a merge (<<) needs a mapping or a list of mappings, not the string \"text\""},
		},
		{
			name: "merge list with a scalar",
			yaml: "log: {<<: [{level: info}, 3]}\n",
			want: []string{"t.yaml:1:27: log: a merge (<<) needs a mapping or a list of mappings, not the number 3"},
		},
		{
			name: "self merge",
			yaml: "log: &a {<<: *a}\n",
			want: []string{"t.yaml:1:14: log: a merge (<<) refers to a mapping that contains it"},
		},
		{
			name: "unknown field arriving through a merge",
			yaml: "shutdown: &s {timeout: 1s}\nlog: {<<: *s}\n",
			want: []string{`t.yaml:1:15: log.timeout: unknown field "timeout"`},
		},
		{
			name: "alias of the wrong kind",
			yaml: "listeners: &l [*l]\n",
			want: []string{"t.yaml:1:12: listeners[0]: must be a mapping, not a list"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLines(t, errorLines(t, tc.yaml), tc.want)
		})
	}
}

// TestBillionLaughs feeds documents whose aliases expand exponentially or
// quadratically: each must be refused with the alias error, quickly.
func TestBillionLaughs(t *testing.T) {
	// Merges of merges: 10^15 mappings once expanded.
	var exp strings.Builder
	exp.WriteString("a0: &m0 {level: info}\n")
	for i := 1; i <= 15; i++ {
		fmt.Fprintf(&exp, "a%d: &m%d {<<: [", i, i)
		for j := range 10 {
			if j > 0 {
				exp.WriteString(", ")
			}
			fmt.Fprintf(&exp, "*m%d", i-1)
		}
		exp.WriteString("]}\n")
	}
	exp.WriteString("log: *m15\n")

	// Plain aliases: 1,000 clusters of the same 1,000 endpoints.
	var quad strings.Builder
	quad.WriteString("x: &e {address: \"h:1\"}\ny: &eps [")
	for j := range 1000 {
		if j > 0 {
			quad.WriteString(", ")
		}
		quad.WriteString("*e")
	}
	quad.WriteString("]\nz: &c {name: c, endpoints: *eps}\nclusters: [")
	for j := range 1000 {
		if j > 0 {
			quad.WriteString(", ")
		}
		quad.WriteString("*c")
	}
	quad.WriteString("]\n")

	for name, doc := range map[string]string{"exponential": exp.String(), "quadratic": quad.String()} {
		t.Run(name, func(t *testing.T) {
			lines := errorLines(t, doc)
			found := 0
			for _, l := range lines {
				if strings.Contains(l, "aliases expand the document beyond") {
					found++
				}
			}
			if found != 1 {
				t.Errorf("want one alias expansion error among %d errors, got %d; first errors:\n%s",
					len(lines), found, strings.Join(lines[:min(len(lines), 5)], "\n"))
			}
		})
	}
}

// TestManyKeys: a mapping with many keys (all unknown here) is handled in
// linear time and each key is reported once; duplicates among them too.
func TestManyKeys(t *testing.T) {
	var b strings.Builder
	b.WriteString("log:\n")
	for i := range 20000 {
		fmt.Fprintf(&b, "  k%d: 1\n", i)
	}
	b.WriteString("  k7: 2\n  level: warn\n")
	lines := errorLines(t, b.String())
	if len(lines) != 20001 {
		t.Fatalf("%d errors, want 20001", len(lines))
	}
	if want := `t.yaml:20002:3: log.k7: duplicate field "k7" (first at line 9)`; lines[20000] != want {
		t.Errorf("last error = %q, want %q", lines[20000], want)
	}
}
