package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/vigil-proxy/vigil/internal/certgen"
)

// testPKI is a CA with files for vigil's listeners, in a directory of the
// test's own.
type testPKI struct {
	t   testing.TB
	dir string
	ca  *certgen.CA
	// caFile is the CA's certificate, for clients and client_ca_file.
	caFile string
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	ca, err := certgen.NewCA("vigil test CA")
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{t: t, dir: t.TempDir(), ca: ca}
	if p.caFile, err = ca.Write(p.dir, "ca"); err != nil {
		t.Fatal(err)
	}
	return p
}

// issue writes a certificate for names (and its key) as NAME.crt/.key.
func (p *testPKI) issue(name string, opts certgen.Options) (certFile, keyFile string, leaf *certgen.Leaf) {
	p.t.Helper()
	leaf, err := p.ca.Issue(opts)
	if err != nil {
		p.t.Fatal(err)
	}
	certFile, keyFile, err = leaf.Write(p.dir, name)
	if err != nil {
		p.t.Fatal(err)
	}
	return certFile, keyFile, leaf
}

func (p *testPKI) pool() *x509.CertPool { return p.ca.Pool() }

// tlsClient dials a grpc listener over TLS.
func tlsClient(t testing.TB, addr string, cfg *tls.Config) *client {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &client{conn: conn, tc: testpb.NewTestServiceClient(conn)}
}

// grpcHealthProbe returns the path of grpc_health_probe, installed by
// .ci/install-grpc-health-probe. Under CI (VIGIL_CI=1) a missing probe
// fails the test; elsewhere it skips it.
func grpcHealthProbe(t testing.TB) string {
	t.Helper()
	for _, p := range []string{os.Getenv("VIGIL_GRPC_HEALTH_PROBE"), filepath.Join(os.Getenv("HOME"), ".cache", "vigil", "bin", "grpc-health-probe")} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("grpc-health-probe"); err == nil {
		return p
	}
	if os.Getenv("VIGIL_CI") != "" {
		t.Fatal("grpc-health-probe is not installed: run .ci/install-grpc-health-probe")
	}
	t.Skip("grpc-health-probe is not installed: run .ci/install-grpc-health-probe")
	return ""
}

// runProbe runs grpc_health_probe with args and returns its exit code and
// output.
func runProbe(t testing.TB, probe string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, probe, args...).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	}
	t.Fatalf("grpc-health-probe: %v\n%s", err, out)
	return 0, ""
}
