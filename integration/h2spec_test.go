package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/internal/certgen"
)

// h2specVersion is the h2spec the suite is held to; .ci/install-h2spec
// installs it.
const h2specVersion = "v2.2.1"

// tool finds an external test tool: the path in env, else name under
// $HOME/.cache/vigil/bin (where the project's .ci/ scripts install), else
// on PATH. When it is missing the test is skipped, or fails when
// required is set in the environment (the Makefile targets set it, so CI
// never passes a suite it could not run).
func tool(t *testing.T, env, name, required string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	if home, err := os.UserHomeDir(); err == nil {
		if p := filepath.Join(home, ".cache", "vigil", "bin", name); fileExists(p) {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	msg := name + " is not installed (" + required + ")"
	if os.Getenv("VIGIL_REQUIRE_TOOLS") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

var h2specSummary = regexp.MustCompile(`(?m)^(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed$`)

// TestH2Spec runs every h2spec test case against a grpc listener in front
// of a real gRPC backend, plaintext (h2c) and over TLS (ALPN h2): all must
// pass (RFC 7540/9113 conformance of the listener's HTTP/2 server; `make
// test-h2spec`).
func TestH2Spec(t *testing.T) {
	h2spec := tool(t, "VIGIL_H2SPEC", "h2spec", "make test-h2spec installs h2spec "+h2specVersion)
	be := startBackend(t, "b0")
	pki := newTestPKI(t)
	cert, key, _ := pki.issue("vigil", certgen.Options{Names: []string{"vigil.test", "127.0.0.1"}})
	v := startVigil(t, yamlConfig{
		Listeners: []yamlListener{
			{Name: "h2c", Cluster: "c"},
			{Name: "tls", Cluster: "c", Extra: fmt.Sprintf("tls: {cert_file: %s, key_file: %s}", cert, key)},
		},
		Clusters: []yamlCluster{{Name: "c", Endpoints: []string{be.addr}}},
	}.String())
	v.wait(10*time.Second, 0, match("endpoint admitted"), "the backend admitted")
	for _, tt := range []struct {
		listener string
		flags    []string
	}{
		{"h2c", nil},
		// -k: h2spec has no flag for a CA; the handshake is TLS 1.2+ with
		// ALPN h2 all the same.
		{"tls", []string{"-t", "-k"}},
	} {
		t.Run(tt.listener, func(t *testing.T) {
			host, port, _ := strings.Cut(v.listener(tt.listener), ":")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			args := append([]string{"-h", host, "-p", port,
				"--path", "/grpc.testing.TestService/EmptyCall", "--timeout", "2"}, tt.flags...)
			out, err := exec.CommandContext(ctx, h2spec, args...).CombinedOutput()
			m := h2specSummary.FindSubmatch(out)
			if m == nil {
				t.Fatalf("h2spec: %v; output:\n%s", err, out)
			}
			t.Logf("h2spec %s, %s: %s", h2specVersion, tt.listener, m[0])
			if string(m[2]) != string(m[1]) {
				t.Errorf("h2spec: not every test passed:\n%s", failures(out))
			}
		})
	}
}

// failures is h2spec's list of failed cases (its output from "Failures:").
func failures(out []byte) string {
	s := string(out)
	if i := strings.Index(s, "Failures:"); i >= 0 {
		return s[i:]
	}
	return s
}
