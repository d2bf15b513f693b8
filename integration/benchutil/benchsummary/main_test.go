package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func write(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bench.txt")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRun(t *testing.T) {
	met := write(t, "BenchmarkEviction/watch-2 1 0 ns/op 1.5 evict-p50-ms 9 evict-p99-ms 0 late-rpcs 0 errors\n")
	missed := write(t, "BenchmarkEviction/watch-2 1 0 ns/op 7 evict-p50-ms 9 evict-p99-ms 0 late-rpcs 0 errors\n")
	failed := write(t, "--- FAIL: BenchmarkReload/100\n")
	micro := write(t, "BenchmarkPick-2 1000 12.5 ns/op 0 B/op 0 allocs/op\n")
	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"targets met", []string{"-micro", micro, met}, 0, []string{"watch: eviction p50", "1.50 ms", "ok", "Pick", "12.5 ns/op", "0 targets missed, 0 benchmarks failed"}},
		{"target missed", []string{missed}, 0, []string{"MISSED", "1 targets missed"}},
		{"target missed, strict", []string{"-strict", missed}, 1, []string{"MISSED", "1 targets missed"}},
		{"benchmark failed", []string{met, failed}, 1, []string{"1 benchmarks failed [BenchmarkReload/100]"}},
		{"missing file", []string{filepath.Join(t.TempDir(), "none")}, 2, nil},
		{"bad flag", []string{"-nope"}, 2, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errs bytes.Buffer
			if code := run(tc.args, &out, &errs); code != tc.code {
				t.Fatalf("exit %d, want %d; stdout:\n%s\nstderr:\n%s", code, tc.code, out.String(), errs.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
