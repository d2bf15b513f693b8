// Package benchutil reads `go test -bench` output and turns vigil's
// end-to-end benchmark figures into a readable summary: each figure next to
// its target, ratios and differences against the direct baseline, and the
// machine's load while it was measured. cmd benchsummary (in
// benchsummary/) prints it for make bench.
package benchutil

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Results holds every metric of every benchmark in some output, by package,
// benchmark name (without the -GOMAXPROCS suffix) and unit. A benchmark run
// several times (-count) has several values per unit.
type Results struct {
	metrics map[benchKey]map[string][]float64
	order   []benchKey // in order of first appearance
	// Failures are the benchmarks and packages reported as failed.
	Failures []string
	// Skips are benchmarks reported as skipped, with the reason.
	Skips []string
}

// benchKey names a benchmark: packages may have benchmarks of the same
// name (every balancer policy has BenchmarkPick).
type benchKey struct {
	pkg, name string
}

// NewResults returns empty results, to Merge others into.
func NewResults() *Results { return &Results{metrics: map[benchKey]map[string][]float64{}} }

// resultLine is one benchmark result: name, iterations, then value-unit
// pairs.
var resultLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+(.+)$`)

// Parse reads benchmark output. Lines that are not results are ignored,
// except failures and skips, which are collected.
func Parse(r io.Reader) (*Results, error) {
	res := NewResults()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var pendingSkip string // "--- SKIP: name": its reason is on the next line
	pkg := ""              // from the "pkg: " line before a package's results
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		if pendingSkip != "" {
			res.Skips = append(res.Skips, pendingSkip+": "+trimmed)
			pendingSkip = ""
			continue
		}
		switch {
		case strings.HasPrefix(trimmed, "--- FAIL: "):
			res.Failures = append(res.Failures, strings.Fields(strings.TrimPrefix(trimmed, "--- FAIL: "))[0])
			continue
		case strings.HasPrefix(trimmed, "--- SKIP: "):
			pendingSkip = strings.Fields(strings.TrimPrefix(trimmed, "--- SKIP: "))[0]
			continue
		case strings.HasPrefix(line, "FAIL\t"):
			res.Failures = append(res.Failures, strings.Fields(line)[1])
			continue
		}
		m := resultLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		key := benchKey{pkg: pkg, name: m[1]}
		fields := strings.Fields(m[3])
		if len(fields)%2 != 0 {
			return nil, fmt.Errorf("benchmark line with an odd number of value/unit fields: %q", line)
		}
		if res.metrics[key] == nil {
			res.metrics[key] = map[string][]float64{}
			res.order = append(res.order, key)
		}
		for i := 0; i < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				return nil, fmt.Errorf("value %q of %s in %q: %w", fields[i], fields[i+1], line, err)
			}
			res.metrics[key][fields[i+1]] = append(res.metrics[key][fields[i+1]], v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read benchmark output: %w", err)
	}
	return res, nil
}

// Merge adds the results of other to r.
func (r *Results) Merge(other *Results) {
	for _, key := range other.order {
		if r.metrics[key] == nil {
			r.metrics[key] = map[string][]float64{}
			r.order = append(r.order, key)
		}
		for unit, vs := range other.metrics[key] {
			r.metrics[key][unit] = append(r.metrics[key][unit], vs...)
		}
	}
	r.Failures = append(r.Failures, other.Failures...)
	r.Skips = append(r.Skips, other.Skips...)
}

// Names returns the benchmark names in order of first appearance, once
// each.
func (r *Results) Names() []string {
	var names []string
	for _, k := range r.order {
		if !slices.Contains(names, k.name) {
			names = append(names, k.name)
		}
	}
	return names
}

// Values returns every value of the benchmarks called name (in any
// package) in unit, in order.
func (r *Results) Values(name, unit string) []float64 {
	var vs []float64
	for _, k := range r.order {
		if k.name == name {
			vs = append(vs, r.metrics[k][unit]...)
		}
	}
	return vs
}

// Median returns the median of the values of the benchmarks called name
// in unit (the mean of the middle two for an even count), and how many
// values there were.
func (r *Results) Median(name, unit string) (float64, int, bool) {
	return median(r.Values(name, unit))
}

func median(vs []float64) (float64, int, bool) {
	if len(vs) == 0 {
		return 0, 0, false
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2], n, true
	}
	return (s[n/2-1] + s[n/2]) / 2, n, true
}
