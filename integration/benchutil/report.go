package benchutil

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"unicode/utf8"
)

// Op says how a figure is computed from its benchmark's metric.
type Op int

// Figure operations.
const (
	// Value is the metric itself.
	Value Op = iota
	// Ratio is the metric divided by the same metric of the base.
	Ratio
	// Diff is the metric minus the same metric of the base.
	Diff
)

// Target is what a figure should be, as text for the reader and as a test.
type Target struct {
	Text string
	Met  func(float64) bool
}

// AtMost, AtLeast, Below and Zero are the targets the figures use.
func AtMost(x float64, unit string) Target {
	return Target{Text: "≤ " + trim(x) + unit, Met: func(v float64) bool { return v <= x }}
}

// AtLeast is a target of x or more.
func AtLeast(x float64, unit string) Target {
	return Target{Text: "≥ " + trim(x) + unit, Met: func(v float64) bool { return v >= x }}
}

// Below is a target of less than x.
func Below(x float64, unit string) Target {
	return Target{Text: "< " + trim(x) + unit, Met: func(v float64) bool { return v < x }}
}

// Zero is a target of exactly 0.
func Zero() Target { return Target{Text: "0", Met: func(v float64) bool { return v == 0 }} }

func trim(x float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", x), "0"), ".")
}

// Figure is one line of the summary.
type Figure struct {
	Label string
	Bench string // benchmark name, without the -GOMAXPROCS suffix
	Unit  string // the metric's unit as reported
	Op    Op
	Base  string // the baseline benchmark of Ratio and Diff
	Show  string // how the value is shown: a unit after it ("×", " ms", ...)
	// Target, if set, is checked against the value.
	Target *Target
}

// Column is one column of a Table: a metric, or a ratio or difference
// against the table's Base row.
type Column struct {
	Header string
	Unit   string
	Op     Op
}

// Row is one row of a Table: a benchmark.
type Row struct {
	Label string
	Bench string
}

// Table shows several metrics of several benchmarks side by side, without
// targets (the section's Figures check those).
type Table struct {
	Title   string
	Base    string // the benchmark that Ratio and Diff columns compare with
	Columns []Column
	Rows    []Row
}

// Section groups the figures of one benchmark.
type Section struct {
	Title string
	// Notes are printed under the title: what shares the cores, how it
	// is measured.
	Notes []string
	// Command reproduces the section's figures.
	Command string
	// Benchmarks whose loadavg metric is summarised (prefix match).
	LoadOf string
	Tables []Table
	// Figures are checked against their targets.
	Figures []Figure
}

// Write prints the sections, with the value of each figure (the median
// over runs), its target and whether it is met. It returns how many
// targets were missed.
func Write(w io.Writer, r *Results, sections []Section) int {
	missed := 0
	for _, s := range sections {
		fmt.Fprintf(w, "\n== %s\n", s.Title)
		for _, n := range s.Notes {
			fmt.Fprintf(w, "   %s\n", n)
		}
		if s.Command != "" {
			fmt.Fprintf(w, "   $ %s\n", s.Command)
		}
		if lo, hi, ok := r.loadRange(s.LoadOf); ok {
			fmt.Fprintf(w, "   load average (1 min) at the start of each run: %.2f to %.2f\n", lo, hi)
		}
		for _, t := range s.Tables {
			r.writeTable(w, t)
		}
		if len(s.Figures) == 0 {
			continue
		}
		if len(s.Tables) > 0 {
			fmt.Fprintln(w, "   targets:")
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, f := range s.Figures {
			v, n, ok := r.figure(f)
			value := "—"
			if ok {
				value = format(v) + f.Show
				if n > 1 {
					value += fmt.Sprintf(" (median of %d)", n)
				}
			}
			target, verdict := "", ""
			if f.Target != nil {
				target = f.Target.Text
				switch {
				case !ok:
					verdict = "not measured"
				case f.Target.Met(v):
					verdict = "ok"
				default:
					verdict = "MISSED"
					missed++
				}
			}
			fmt.Fprintf(tw, "   %s\t%s\t%s\t%s\n", f.Label, value, target, verdict)
		}
		_ = tw.Flush()
	}
	return missed
}

// writeTable prints one table; a cell with no value (a skipped
// benchmark) is "—". Values are medians over runs; the number of runs is
// shown when there was more than one.
func (r *Results) writeTable(w io.Writer, t Table) {
	if t.Title != "" {
		fmt.Fprintf(w, "   %s\n", t.Title)
	}
	header := []string{""}
	for _, c := range t.Columns {
		header = append(header, c.Header)
	}
	cells := [][]string{append(header, "runs")}
	for _, row := range t.Rows {
		line := []string{row.Label}
		runs := 0
		for _, c := range t.Columns {
			v, n, ok := r.figure(Figure{Bench: row.Bench, Unit: c.Unit, Op: c.Op, Base: t.Base})
			if !ok {
				line = append(line, "—")
				continue
			}
			line = append(line, format(v))
			runs = max(runs, n)
		}
		cells = append(cells, append(line, fmt.Sprint(runs)))
	}
	writeCells(w, cells)
}

// writeCells prints a grid: the first column aligned left, the others
// right, two spaces apart.
func writeCells(w io.Writer, cells [][]string) {
	var widths []int
	for _, line := range cells {
		for i, c := range line {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for _, line := range cells {
		var b strings.Builder
		b.WriteString("   ")
		for i, c := range line {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if i == 0 {
				b.WriteString(c + pad)
			} else {
				b.WriteString("  " + pad + c)
			}
		}
		fmt.Fprintln(w, b.String())
	}
}

// figure computes a figure's value from the medians of its metrics.
func (r *Results) figure(f Figure) (float64, int, bool) {
	v, n, ok := r.Median(f.Bench, f.Unit)
	if !ok {
		return 0, 0, false
	}
	switch f.Op {
	case Ratio, Diff:
		base, m, ok := r.Median(f.Base, f.Unit)
		if !ok || (f.Op == Ratio && base == 0) {
			return 0, 0, false
		}
		n = min(n, m)
		if f.Op == Ratio {
			return v / base, n, true
		}
		return v - base, n, true
	}
	return v, n, true
}

// loadRange is the lowest and highest loadavg of the benchmarks whose name
// starts with prefix.
func (r *Results) loadRange(prefix string) (lo, hi float64, ok bool) {
	if prefix == "" {
		return 0, 0, false
	}
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, name := range r.Names() {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		for _, v := range r.Values(name, "loadavg") {
			lo, hi, ok = min(lo, v), max(hi, v), true
		}
	}
	return lo, hi, ok
}

// format shows a value with about three significant digits.
func format(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100 || v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// WriteAll lists every benchmark of r, by package, with all its metrics
// (medians), for the micro-benchmarks, which have no targets.
func WriteAll(w io.Writer, r *Results) {
	var cells [][]string
	for _, k := range r.order {
		units := make([]string, 0, len(r.metrics[k]))
		for u := range r.metrics[k] {
			units = append(units, u)
		}
		slices.Sort(units)
		line := []string{shortPackage(k.pkg), strings.TrimPrefix(k.name, "Benchmark")}
		for _, u := range units {
			v, _, _ := median(r.metrics[k][u])
			line = append(line, format(v)+" "+u)
		}
		cells = append(cells, line)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, line := range cells {
		fmt.Fprintf(tw, "   %s\n", strings.Join(line, "\t"))
	}
	_ = tw.Flush()
}

// shortPackage drops the module path from a package path.
func shortPackage(pkg string) string {
	if i := strings.Index(pkg, "/vigil/"); i >= 0 {
		return pkg[i+len("/vigil/"):]
	}
	return pkg
}
