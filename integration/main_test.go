package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/internal/kubetest"
)

// binDir holds the binaries built once for the whole package.
var binDir string

func TestMain(m *testing.M) {
	// The Kubernetes tests run in a network namespace of their own: with
	// VIGIL_TEST_KUBE=1 this re-executes the test binary there.
	kubetest.EnterNamespace()
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
	code := m.Run()
	// The shared API server stops first: the goroutines waiting for its
	// processes are not leaks.
	kubetest.StopShared()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1")); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func bin(name string) string { return filepath.Join(binDir, name) }
