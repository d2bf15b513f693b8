package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vigil-proxy/vigil/internal/certgen"
	"github.com/vigil-proxy/vigil/internal/config"
)

// TestClientConfig: the server name is server_name or the endpoint's
// host, h2 asks for ALPN h2, and one configuration is shared per name.
func TestClientConfig(t *testing.T) {
	st, _ := runStore(t)
	dir := t.TempDir()
	ca, _ := certgen.NewCA("ca")
	caFile, _ := ca.Write(dir, "ca")
	for _, tt := range []struct {
		serverName, address, want string
	}{
		{"", "10.0.0.1:443", "10.0.0.1"},
		{"", "api.internal:50051", "api.internal"},
		{"", "[::1]:50051", "::1"},
		{"orders.example.com", "10.0.0.1:443", "orders.example.com"},
	} {
		c, err := st.Client(config.ClusterTLS{CAFile: caFile, ServerName: tt.serverName}, ClientOptions{Cluster: "c"})
		if err != nil {
			t.Fatal(err)
		}
		cfg := c.ClientConfig(tt.address, true)
		if cfg.ServerName != tt.want || !slices.Equal(cfg.NextProtos, []string{"h2"}) || cfg.RootCAs == nil || cfg.InsecureSkipVerify {
			t.Errorf("%q %q: ServerName %q NextProtos %v", tt.serverName, tt.address, cfg.ServerName, cfg.NextProtos)
		}
		if c.ClientConfig(tt.address, true) != cfg {
			t.Errorf("%s: a second dial got another configuration", tt.address)
		}
		if plain := c.ClientConfig(tt.address, false); len(plain.NextProtos) != 0 {
			t.Errorf("%s: no h2 asked, NextProtos %v", tt.address, plain.NextProtos)
		}
		if c.MutualTLS() {
			t.Errorf("no client certificate, but MutualTLS")
		}
		c.Close()
	}
	sys, err := st.Client(config.ClusterTLS{InsecureSkipVerify: true}, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	if cfg := sys.ClientConfig("a:1", false); cfg.RootCAs != nil || !cfg.InsecureSkipVerify {
		t.Errorf("system roots with skip verify: %+v", cfg)
	}
}

// TestClientReload: a rotated client certificate and CA are used by the
// next dial; a broken rotation is rejected and the previous pair stays.
func TestClientReload(t *testing.T) {
	st, logs := runStore(t)
	dir := t.TempDir()
	ca1, _ := certgen.NewCA("ca1")
	ca2, _ := certgen.NewCA("ca2")
	caFile, _ := ca1.Write(dir, "ca")
	first := issue(t, ca1, "vigil")
	certFile, keyFile, _ := first.Write(dir, "client")
	c, err := st.Client(config.ClusterTLS{CAFile: caFile, CertFile: certFile, KeyFile: keyFile}, ClientOptions{Cluster: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	serial := func() string { return c.ClientConfig("a:1", true).Certificates[0].Leaf.SerialNumber.String() }
	if !c.MutualTLS() || serial() != first.Cert.SerialNumber.String() {
		t.Fatalf("client certificate not in use")
	}
	second := issue(t, ca1, "vigil")
	writeFile(t, keyFile, second.KeyPEM)
	writeFile(t, certFile, second.CertPEM)
	waitFor(t, "the rotated client certificate", func() bool { return serial() == second.Cert.SerialNumber.String() })

	trusts := func(ca *certgen.CA) bool {
		_, err := ca.Cert.Verify(x509VerifyOptions(c.ClientConfig("a:1", true)))
		return err == nil
	}
	writeFile(t, caFile, ca2.PEM)
	waitFor(t, "the new CA", func() bool { return trusts(ca2) && !trusts(ca1) })

	writeFile(t, certFile, []byte("garbage\n"))
	waitFor(t, "the rejection", func() bool { return strings.Contains(logs.String(), "tls reload rejected") })
	if serial() != second.Cert.SerialNumber.String() {
		t.Fatalf("a broken rotation replaced the client certificate")
	}
	line := ""
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "tls reload rejected") {
			line = l
		}
	}
	if !strings.Contains(line, "level=ERROR") || !strings.Contains(line, "cluster=orders") || !strings.Contains(line, "file="+certFile) {
		t.Fatalf("rejection record: %s", line)
	}
	if _, err := st.Client(config.ClusterTLS{CAFile: filepath.Join(dir, "nothere.crt")}, ClientOptions{}); err == nil {
		t.Fatal("a missing CA file loaded")
	}
}

func x509VerifyOptions(cfg *tls.Config) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: cfg.RootCAs}
}
