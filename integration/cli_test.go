package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte(yamlConfig{
		Listeners: []yamlListener{{Name: "api", Cluster: "demo"}},
		Clusters:  []yamlCluster{{Name: "demo", Endpoints: []string{"127.0.0.1:50051"}}},
	}.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	badYAML := `listeners:
  - name: api
    address: 127.0.0.1:8080
    protocol: quic
    cluster: nowhere
clusters:
  - name: demo
    endpoints: []
    health_check:
      interval: -5s
      unhealthy_threshold: 0
`
	if err := os.WriteFile(bad, []byte(badYAML), 0o644); err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command(bin("vigil"), "validate", "--config", good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok") {
		t.Errorf("validate good config: %v\n%s", err, out)
	}

	out, err = exec.Command(bin("vigil"), "validate", "--config", bad).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("validate bad config: %v; want exit status 1\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	wantAt := []string{
		bad + ":4:15: listeners[0].protocol:",
		bad + ":5:14: listeners[0].cluster:",
		bad + ":8:16: clusters[0].endpoints:",
		bad + ":10:17: clusters[0].health_check.interval:",
		bad + ":11:28: clusters[0].health_check.unhealthy_threshold:",
	}
	if len(lines) != len(wantAt) {
		t.Fatalf("validate printed %d lines; want %d, one per problem:\n%s", len(lines), len(wantAt), out)
	}
	for i, prefix := range wantAt {
		if !strings.HasPrefix(lines[i], prefix) {
			t.Errorf("line %d = %q; want it to start with %q", i+1, lines[i], prefix)
		}
	}

	// run refuses to start on the same file, with the same lines.
	out, err = exec.Command(bin("vigil"), "run", "--config", bad).CombinedOutput()
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), bad+":4:15:") {
		t.Errorf("run with a bad config: %v\n%s", err, out)
	}
}

func TestVersionCommand(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(bin("vigil"), "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "vigil ") {
		t.Errorf("vigil version = %q, %v", out, err)
	}
}
