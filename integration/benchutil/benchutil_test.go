package benchutil

import (
	"bytes"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const sample = `goos: linux
BenchmarkTCPBulk/upload/direct-2  	       3	 274553531 ns/op	4000.00 MB/s
BenchmarkTCPBulk/upload/vigil-2   	       3	 516958857 ns/op	2000.00 MB/s	       226.6 proxy-cpu-µs/MB
BenchmarkTCPBulk/upload/vigil-2   	       3	 516958857 ns/op	1000.00 MB/s	       300 proxy-cpu-µs/MB
BenchmarkTCPBulk/upload/vigil-2   	       3	 516958857 ns/op	3000.00 MB/s	       700 proxy-cpu-µs/MB
--- SKIP: BenchmarkTCPBulk/upload/nginx
    bench_tcp_test.go:50: nginx is not installed
BenchmarkGRPCLoad/unary/c1/direct-2 	1	0 ns/op	100.0 p50-µs	5000 rps	2.5 loadavg
BenchmarkGRPCLoad/unary/c1/vigil-2 	1	0 ns/op	180.0 p50-µs	4000 rps	3.5 loadavg
--- FAIL: BenchmarkScale/watch
    bench_scale_test.go:47: not all healthy
FAIL	github.com/vigil-proxy/vigil/integration	137.510s
`

func TestParse(t *testing.T) {
	r, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		bench, unit string
		want        float64
		runs        int
		ok          bool
	}{
		{"BenchmarkTCPBulk/upload/direct", "MB/s", 4000, 1, true},
		{"BenchmarkTCPBulk/upload/vigil", "MB/s", 2000, 3, true}, // median of 1000, 2000, 3000
		{"BenchmarkTCPBulk/upload/vigil", "proxy-cpu-µs/MB", 300, 3, true},
		{"BenchmarkTCPBulk/upload/direct", "ns/op", 274553531, 1, true},
		{"BenchmarkTCPBulk/upload/nginx", "MB/s", 0, 0, false},
		{"BenchmarkGRPCLoad/unary/c1/vigil", "p50-µs", 180, 1, true},
	}
	for _, tc := range tests {
		got, runs, ok := r.Median(tc.bench, tc.unit)
		if got != tc.want || runs != tc.runs || ok != tc.ok {
			t.Errorf("Median(%s, %s) = %v, %d, %v; want %v, %d, %v", tc.bench, tc.unit, got, runs, ok, tc.want, tc.runs, tc.ok)
		}
	}
	if want := []string{"BenchmarkScale/watch", "github.com/vigil-proxy/vigil/integration"}; strings.Join(r.Failures, ",") != strings.Join(want, ",") {
		t.Errorf("failures = %q, want %q", r.Failures, want)
	}
	if len(r.Skips) != 1 || !strings.Contains(r.Skips[0], "nginx is not installed") {
		t.Errorf("skips = %q", r.Skips)
	}
}

func TestMedianEvenCount(t *testing.T) {
	r, err := Parse(strings.NewReader("BenchmarkX-2 1 1 u\nBenchmarkX-2 1 4 u\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, n, _ := r.Median("BenchmarkX", "u"); got != 2.5 || n != 2 {
		t.Errorf("median = %v over %d, want 2.5 over 2", got, n)
	}
}

func TestParseRejectsMalformedLines(t *testing.T) {
	for _, in := range []string{"BenchmarkX-2 1 12 ns/op 5\n", "BenchmarkX-2 1 twelve ns/op\n"} {
		if _, err := Parse(strings.NewReader(in)); err == nil {
			t.Errorf("Parse(%q) succeeded", in)
		}
	}
}

func TestMerge(t *testing.T) {
	a, _ := Parse(strings.NewReader("BenchmarkX-2 1 1 u\n"))
	b, _ := Parse(strings.NewReader("BenchmarkX-2 1 3 u\nBenchmarkY-2 1 7 u\n--- FAIL: BenchmarkY\n"))
	all := NewResults()
	all.Merge(a)
	all.Merge(b)
	if got, n, _ := all.Median("BenchmarkX", "u"); got != 2 || n != 2 {
		t.Errorf("merged median = %v over %d, want 2 over 2", got, n)
	}
	if names := all.Names(); strings.Join(names, ",") != "BenchmarkX,BenchmarkY" || len(all.Failures) != 1 {
		t.Errorf("names %v, failures %v", names, all.Failures)
	}
}

func TestWriteChecksTargets(t *testing.T) {
	r, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	const direct = "BenchmarkGRPCLoad/unary/c1/direct"
	const vigil = "BenchmarkGRPCLoad/unary/c1/vigil"
	sections := []Section{{
		Title:  "gRPC",
		LoadOf: "BenchmarkGRPCLoad",
		Tables: []Table{{Base: direct, Columns: []Column{{Header: "RPCs/s", Unit: "rps"}, {Header: "×direct", Unit: "rps", Op: Ratio}, {Header: "+p50", Unit: "p50-µs", Op: Diff}},
			Rows: []Row{{Label: "direct", Bench: direct}, {Label: "vigil", Bench: vigil}, {Label: "gone", Bench: "BenchmarkGone"}}}},
		Figures: []Figure{
			{Label: "ratio", Bench: vigil, Unit: "rps", Op: Ratio, Base: direct, Show: "×", Target: target(AtLeast(0.9, "×"))},
			{Label: "added p50", Bench: vigil, Unit: "p50-µs", Op: Diff, Base: direct, Show: " µs", Target: target(Below(100, " µs"))},
			{Label: "missing", Bench: "BenchmarkGone", Unit: "rps", Target: target(Zero())},
			{Label: "no target", Bench: vigil, Unit: "rps"},
		},
	}}
	var out bytes.Buffer
	missed := Write(&out, r, sections)
	if missed != 1 {
		t.Errorf("missed = %d, want 1 (the ratio)", missed)
	}
	text := out.String()
	for _, want := range []string{
		"ratio      0.800×  ≥ 0.9×    MISSED", // 4000/5000
		"added p50  80 µs   < 100 µs  ok",     // 180-100
		"missing    —       0         not measured",
		"load average (1 min) at the start of each run: 2.50 to 3.50",
		"vigil     4000    0.800    80     1", // the table's ratio and difference
		"gone         —        —     —     0",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("summary lacks %q:\n%s", want, text)
		}
	}
}

func TestWriteAllKeepsPackagesApart(t *testing.T) {
	r, err := Parse(strings.NewReader(`pkg: github.com/vigil-proxy/vigil/balancer/roundrobin
BenchmarkPick/3-2 100 7 ns/op 0 allocs/op
pkg: github.com/vigil-proxy/vigil/balancer/random
BenchmarkPick/3-2 100 9 ns/op 0 allocs/op
`))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	WriteAll(&out, r)
	for _, want := range []string{"balancer/roundrobin  Pick/3  0 allocs/op  7 ns/op", "balancer/random      Pick/3  0 allocs/op  9 ns/op"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("listing lacks %q:\n%s", want, out.String())
		}
	}
}
