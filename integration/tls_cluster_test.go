package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/internal/certgen"
)

// seenClients records the serial numbers of the client certificates a
// TLS backend verified.
type seenClients struct {
	mu      sync.Mutex
	serials map[string]int
}

func (s *seenClients) verify(cs tls.ConnectionState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serials == nil {
		s.serials = map[string]int{}
	}
	if len(cs.PeerCertificates) > 0 {
		s.serials[cs.PeerCertificates[0].SerialNumber.String()]++
	}
	return nil
}

func (s *seenClients) count(serial string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serials[serial]
}

// backendTLS is a backend's server configuration: leaf's certificate and,
// with clientCAs, client certificates required (mTLS).
func backendTLS(leaf *certgen.Leaf, clientCAs *x509.CertPool, seen *seenClients) *tls.Config {
	cfg := &tls.Config{Certificates: []tls.Certificate{leaf.TLS()}}
	if clientCAs != nil {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = clientCAs
	}
	if seen != nil {
		cfg.VerifyConnection = seen.verify
	}
	return cfg
}

func issueLeaf(t testing.TB, ca *certgen.CA, opts certgen.Options) *certgen.Leaf {
	t.Helper()
	l, err := ca.Issue(opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// clusterTLSYAML is a cluster's tls section, one field a line.
func clusterTLSYAML(fields ...string) string {
	var b strings.Builder
	b.WriteString("tls:\n")
	for i := 0; i+1 < len(fields); i += 2 {
		fmt.Fprintf(&b, "  %s: %s\n", fields[i], fields[i+1])
	}
	if len(fields) == 0 {
		return "tls: {}\n"
	}
	return b.String()
}

// TestClusterTLS: clusters reach grpc-go backends over TLS, verified as
// an IP SAN (no server_name) and by server_name, and over mTLS to a
// backend that requires client certificates; health checks (Check, and
// Watch) go over the same transport, traffic flows through grpc and tcp
// listeners, and /clusters says which clusters use TLS.
func TestClusterTLS(t *testing.T) {
	pki := newTestPKI(t)
	clientCA, err := certgen.NewCA("vigil clients")
	if err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey, clientLeaf := func() (string, string, *certgen.Leaf) {
		l := issueLeaf(t, clientCA, certgen.Options{Names: []string{"vigil"}})
		c, k, err := l.Write(pki.dir, "client")
		if err != nil {
			t.Fatal(err)
		}
		return c, k, l
	}()
	var seen seenClients
	b1 := startBackend(t, "tls", withTLS(backendTLS(issueLeaf(t, pki.ca, certgen.Options{Names: []string{"127.0.0.1"}}), nil, nil)))
	b2 := startBackend(t, "mtls", withTLS(backendTLS(issueLeaf(t, pki.ca, certgen.Options{Names: []string{"backend.test"}}), clientCA.Pool(), &seen)))
	b3 := startBackend(t, "plain")
	vcert, vkey, _ := pki.issue("vigil", certgen.Options{Names: []string{"vigil.test"}})
	cfg := yamlConfig{
		Admin: true,
		Listeners: []yamlListener{
			{Name: "api", Cluster: "tls"},
			{Name: "m", Cluster: "mtls"},
			{Name: "raw", Protocol: "tcp", Cluster: "mtls", Extra: fmt.Sprintf("tls: {cert_file: %s, key_file: %s}", vcert, vkey)},
			{Name: "p", Cluster: "plain"},
		},
		Clusters: []yamlCluster{
			{Name: "tls", Endpoints: []string{b1.addr}, Extra: clusterTLSYAML("ca_file", pki.caFile)},
			{Name: "mtls", Endpoints: []string{b2.addr}, Extra: clusterTLSYAML("ca_file", pki.caFile, "server_name", "backend.test",
				"cert_file", clientCert, "key_file", clientKey),
				Health: "mode: watch\ninterval: 1s\ntimeout: 1s\nunhealthy_threshold: 2\nhealthy_threshold: 1"},
			{Name: "plain", Endpoints: []string{b3.addr}},
		},
	}.String()
	v := startVigil(t, cfg)
	v.wait(15*time.Second, 0, match("ready: first round of health checks done"), "ready")
	for _, name := range []string{"tls", "mtls", "plain"} {
		v.wait(10*time.Second, 0, match("endpoint admitted", "cluster", name), "admitted "+name)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for listener, want := range map[string]string{"api": "tls", "m": "mtls", "p": "plain"} {
		c := dialClient(t, v.listener(listener))
		for range 20 {
			id, err := c.call(ctx)
			if err != nil || id != want {
				t.Fatalf("listener %s: served by %q, %v; want %s", listener, id, err, want)
			}
		}
	}
	// TLS on both sides through a tcp listener: the client's h2 is offered
	// to the backend.
	c := tlsClient(t, v.listener("raw"), &tls.Config{RootCAs: pki.pool(), ServerName: "vigil.test"})
	for range 5 {
		id, err := c.call(ctx)
		if err != nil || id != "mtls" {
			t.Fatalf("tcp listener to the mtls cluster: %q, %v", id, err)
		}
	}
	if b1.probes.Load() == 0 {
		t.Errorf("the TLS backend was never health-checked with Check")
	}
	// The mTLS backend saw vigil's client certificate: on the Watch
	// stream's connection and on the data connections.
	if n := seen.count(clientLeaf.Cert.SerialNumber.String()); n < 2 {
		t.Errorf("the mTLS backend verified vigil's client certificate %d times, want the probe's and the traffic's", n)
	}

	doc := clusters(t, "http://"+v.adminAddr())
	for _, cl := range doc["clusters"].([]any) {
		cm := cl.(map[string]any)
		if want := cm["name"] != "plain"; cm["tls"] != want {
			t.Errorf("/clusters: cluster %v has tls=%v, want %v", cm["name"], cm["tls"], want)
		}
	}
	if n := len(v.logs.find(0, match("endpoint evicted"))); n != 0 {
		t.Errorf("%d evictions:\n%s", n, v.logs.dump())
	}
}
