package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// binDir holds the binaries built once for the whole package.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vigil-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	// The binaries are built with the race detector, so that a data race
	// in vigil under the load these tests put on it fails the test that
	// caused it (the harness looks for the race report in vigil's output).
	args := []string{"build", "-race", "-o", dir + string(filepath.Separator), "../cmd/vigil", "../cmd/demo-backend"}
	if os.Getenv("VIGIL_INTEGRATION_NORACE") != "" {
		args = append(args[:1], args[2:]...)
	}
	build := exec.Command("go", args...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

func bin(name string) string { return filepath.Join(binDir, name) }
