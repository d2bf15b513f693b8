// Command benchsummary prints the summary of vigil's benchmarks for make
// bench: every end-to-end figure next to its target, then the
// micro-benchmarks.
//
//	benchsummary [-strict] [-micro FILE]... FILE...
//
// The FILEs hold the output of `go test -bench` for ./integration/ (several
// files, or -count runs, are merged: a figure is the median of its runs).
// It exits 1 if a benchmark (or a package's build) failed, or with -strict
// if a target was missed too; 2 on bad input.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/vigil-proxy/vigil/integration/benchutil"
)

type fileList []string

func (f *fileList) String() string     { return fmt.Sprint(*f) }
func (f *fileList) Set(s string) error { *f = append(*f, s); return nil }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("benchsummary", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var micro fileList
	fs.Var(&micro, "micro", "a file of micro-benchmark output to list (repeatable)")
	strict := fs.Bool("strict", false, "exit 1 when a target is missed, not only when a benchmark failed")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	e2e, err := parseFiles(fs.Args())
	if err != nil {
		fmt.Fprintln(stderr, "benchsummary:", err)
		return 2
	}
	micros, err := parseFiles(micro)
	if err != nil {
		fmt.Fprintln(stderr, "benchsummary:", err)
		return 2
	}
	fmt.Fprintln(stdout, "vigil benchmarks: end-to-end figures (the real binary, backends and load on loopback, 2 cores)")
	missed := benchutil.Write(stdout, e2e, benchutil.Sections())
	if len(micro) > 0 {
		fmt.Fprintln(stdout, "\n== Micro-benchmarks (medians)")
		benchutil.WriteAll(stdout, micros)
	}
	failures := append(e2e.Failures, micros.Failures...)
	for _, s := range append(e2e.Skips, micros.Skips...) {
		fmt.Fprintf(stdout, "skipped: %s\n", s)
	}
	fmt.Fprintf(stdout, "\n%d targets missed, %d benchmarks failed %v\n", missed, len(failures), failures)
	if len(failures) > 0 || *strict && missed > 0 {
		return 1
	}
	return 0
}

func parseFiles(paths []string) (*benchutil.Results, error) {
	all := benchutil.NewResults()
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		r, err := benchutil.Parse(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		all.Merge(r)
	}
	return all, nil
}
