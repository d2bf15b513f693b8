package kubetest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// Environment variables.
const (
	// EnvRequire, set to 1, runs the Kubernetes tests (and makes anything
	// they miss a failure); unset, they skip.
	EnvRequire = "VIGIL_TEST_KUBE"
	// envInNamespace marks the re-executed test binary.
	envInNamespace = "VIGIL_KUBETEST_NETNS"
)

// Local address ranges inside the test namespace, routed to its loopback.
const (
	BackendRange4 = "198.18.0.0/15"
	BackendRange6 = "2001:db8::/64"
)

// Enabled reports whether the Kubernetes tests are to run.
func Enabled() bool { return os.Getenv(EnvRequire) == "1" }

// InNamespace reports whether this process is the re-executed test binary
// inside its own network namespace.
func InNamespace() bool { return os.Getenv(envInNamespace) == "1" }

// Require skips the test unless the Kubernetes tests are enabled, and fails
// it when they are but the process is not in its test namespace.
func Require(t testing.TB) {
	t.Helper()
	if !Enabled() {
		t.Skipf("Kubernetes tests run with %s=1 (make test-kube)", EnvRequire)
	}
	if !InNamespace() {
		t.Fatal("the test binary is not in its network namespace: call kubetest.Main from TestMain")
	}
}

// Main is TestMain for packages with Kubernetes tests. When they are
// enabled it re-executes the test binary in new network and mount
// namespaces, set up as the package doc says, and exits with its status;
// inside (or when they are disabled) it runs the tests, stops the shared
// cluster, checks for leaked goroutines with goleak and exits.
func Main(m *testing.M, leakOpts ...goleak.Option) {
	EnterNamespace()
	code := m.Run()
	StopShared()
	if code == 0 {
		if err := goleak.Find(leakOpts...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// EnterNamespace is the first half of Main, for a TestMain that does more
// (builds binaries, say): when the Kubernetes tests are enabled and this is
// not yet the re-executed binary, it runs that and exits with its status;
// otherwise it sets up the namespace (if in one) and returns. Call
// StopShared after the tests.
func EnterNamespace() {
	if Enabled() && !InNamespace() {
		os.Exit(reexec())
	}
	if InNamespace() {
		if err := setupNamespace(); err != nil {
			fmt.Fprintf(os.Stderr, "kubetest: %v\n", err)
			os.Exit(1)
		}
	}
}

func reexec() int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubetest: %v\n", err)
		return 1
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envInNamespace+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS}
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		fmt.Fprintf(os.Stderr, "kubetest: run the tests in a network namespace of their own (needs root, or CAP_SYS_ADMIN): %v\n", err)
		return 1
	}
	return 0
}

// setupNamespace brings the new namespace's loopback up with the backend
// ranges on it, and puts a private tmpfs on /run.
func setupNamespace() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return fmt.Errorf("mount a tmpfs on /run: %w", err)
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"route", "add", "local", BackendRange4, "dev", "lo"},
		{"-6", "route", "add", "local", BackendRange6, "dev", "lo", "table", "local"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s (iproute2 is needed: .ci/install-kube installs it)", strings.Join(args, " "), err, out)
		}
	}
	// IPv6 has no "any address of a local route" binding as IPv4 has; this
	// sysctl, the namespace's own, allows it.
	if err := os.WriteFile("/proc/sys/net/ipv6/ip_nonlocal_bind", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("allow binding to %s: %w", BackendRange6, err)
	}
	return nil
}
