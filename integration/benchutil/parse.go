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

// Results holds every metric of every benchmark in some output, by
// benchmark name (without the -GOMAXPROCS suffix) and unit. A benchmark run
// several times (-count) has several values per unit.
type Results struct {
	metrics map[string]map[string][]float64
	order   []string // benchmark names in order of first appearance
	// Failures are the benchmarks and packages reported as failed.
	Failures []string
	// Skips are benchmarks reported as skipped, with the reason.
	Skips []string
}

// NewResults returns empty results, to Merge others into.
func NewResults() *Results { return &Results{metrics: map[string]map[string][]float64{}} }

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
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
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
		name := m[1]
		fields := strings.Fields(m[3])
		if len(fields)%2 != 0 {
			return nil, fmt.Errorf("benchmark line with an odd number of value/unit fields: %q", line)
		}
		if res.metrics[name] == nil {
			res.metrics[name] = map[string][]float64{}
			res.order = append(res.order, name)
		}
		for i := 0; i < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				return nil, fmt.Errorf("value %q of %s in %q: %w", fields[i], fields[i+1], line, err)
			}
			res.metrics[name][fields[i+1]] = append(res.metrics[name][fields[i+1]], v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read benchmark output: %w", err)
	}
	return res, nil
}

// Merge adds the results of other to r.
func (r *Results) Merge(other *Results) {
	for _, name := range other.order {
		if r.metrics[name] == nil {
			r.metrics[name] = map[string][]float64{}
			r.order = append(r.order, name)
		}
		for unit, vs := range other.metrics[name] {
			r.metrics[name][unit] = append(r.metrics[name][unit], vs...)
		}
	}
	r.Failures = append(r.Failures, other.Failures...)
	r.Skips = append(r.Skips, other.Skips...)
}

// Names returns the benchmarks in order of first appearance.
func (r *Results) Names() []string { return slices.Clone(r.order) }

// Units returns the units reported by benchmark name, sorted.
func (r *Results) Units(name string) []string {
	var units []string
	for u := range r.metrics[name] {
		units = append(units, u)
	}
	slices.Sort(units)
	return units
}

// Median returns the median of a benchmark's values in unit (the mean of
// the middle two for an even count), and how many values there were.
func (r *Results) Median(name, unit string) (float64, int, bool) {
	vs := r.metrics[name][unit]
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

// Values returns every value of a benchmark in unit, in order.
func (r *Results) Values(name, unit string) []float64 {
	return slices.Clone(r.metrics[name][unit])
}
