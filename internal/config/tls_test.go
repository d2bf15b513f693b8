package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/internal/certgen"
	"github.com/vigil-proxy/vigil/internal/tlsfiles"
)

const tlsHead = `listeners:
  - name: api
    address: 127.0.0.1:0
    cluster: c
`

const tlsTail = `clusters:
  - name: c
    endpoints: [{address: 127.0.0.1:1}]
`

func TestListenerTLSSchema(t *testing.T) {
	tests := []struct {
		name string
		tls  string
		want []string
	}{
		{"one pair", "    tls:\n      cert_file: a.crt\n      key_file: a.key\n", nil},
		{"several", "    tls:\n      certificates:\n        - {cert_file: a.crt, key_file: a.key}\n        - cert_file: b.crt\n          key_file: b.key\n      client_ca_file: ca.crt\n      min_version: 1.3\n      handshake_timeout: 3s\n", nil},
		{"quoted version", "    tls:\n      cert_file: a.crt\n      key_file: a.key\n      min_version: \"1.2\"\n", nil},
		{"empty", "    tls:\n", []string{`t.yaml:5:9: listeners[0].tls: missing value: needs cert_file and key_file, or certificates`}},
		{"nothing", "    tls: {}\n", []string{`t.yaml:5:10: listeners[0].tls: needs cert_file and key_file, or certificates`}},
		{"no key", "    tls:\n      cert_file: a.crt\n", []string{`t.yaml:6:7: listeners[0].tls.key_file: missing required field (the PEM private key of cert_file)`}},
		{"both forms", "    tls:\n      cert_file: a.crt\n      key_file: a.key\n      certificates: [{cert_file: b.crt, key_file: b.key}]\n", []string{`t.yaml:8:7: listeners[0].tls.certificates: give cert_file and key_file, or certificates, not both`}},
		{"empty list", "    tls:\n      certificates: []\n", []string{`t.yaml:6:21: listeners[0].tls.certificates: needs at least one certificate (cert_file and key_file)`}},
		{"list item without key", "    tls:\n      certificates:\n        - cert_file: a.crt\n", []string{`t.yaml:7:11: listeners[0].tls.certificates[0].key_file: missing required field (the PEM private key of cert_file)`}},
		{"bad version", "    tls:\n      cert_file: a.crt\n      key_file: a.key\n      min_version: 1.1\n", []string{`t.yaml:8:20: listeners[0].tls.min_version: must be one of 1.2, 1.3, not the number 1.1`}},
		{"empty path", "    tls:\n      cert_file: \"\"\n      key_file: a.key\n", []string{`t.yaml:6:18: listeners[0].tls.cert_file: must be a file path, not empty`}},
		{"typo", "    tls:\n      cert_fil: a.crt\n      key_file: a.key\n", []string{`t.yaml:6:7: listeners[0].tls.cert_fil: unknown field "cert_fil"; did you mean "cert_file"?`, `t.yaml:6:7: listeners[0].tls.cert_file: missing required field (the PEM certificate chain, with key_file)`}},
		{"bad timeout", "    tls:\n      cert_file: a.crt\n      key_file: a.key\n      handshake_timeout: 0s\n", []string{`t.yaml:8:26: listeners[0].tls.handshake_timeout: must be positive, not 0s`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := tlsHead + tt.tls + tlsTail
			checkLines(t, errorLines(t, data), tt.want)
			if tt.want != nil {
				return
			}
			cfg, _ := Parse("t.yaml", []byte(data))
			tl := cfg.Listeners[0].TLS
			if tl == nil || len(tl.Certificates) == 0 || tl.HandshakeTimeout <= 0 || (tl.MinVersion != TLS12 && tl.MinVersion != TLS13) {
				t.Fatalf("tls = %+v", tl)
			}
			var p Parser
			inc, err := p.Parse("t.yaml", []byte(data))
			if err != nil || !inc.Listeners[0].TLS.Equal(tl) || inc.Listeners[0].TLS.Certificates[0].CertPos != tl.Certificates[0].CertPos {
				t.Fatalf("incremental parse: %+v, %v", inc.Listeners[0].TLS, err)
			}
		})
	}
}

func TestListenerTLSDefaults(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte(tlsHead+"    tls:\n      cert_file: a.crt\n      key_file: a.key\n"+tlsTail))
	if err != nil {
		t.Fatal(err)
	}
	tl := cfg.Listeners[0].TLS
	if tl.MinVersion != DefaultTLSMinVersion || tl.HandshakeTimeout != DefaultTLSHandshakeTimeout || tl.ClientCAFile != "" ||
		len(tl.Certificates) != 1 || tl.Certificates[0].Field != "tls" || tl.Certificates[0].CertPos != (Pos{6, 18}) {
		t.Fatalf("tls = %+v", tl)
	}
}

func TestListenerTLSSame(t *testing.T) {
	base := tlsHead + "    tls:\n      cert_file: a.crt\n      key_file: a.key\n" + tlsTail
	a, _ := Parse("t.yaml", []byte(base))
	moved, _ := Parse("t.yaml", []byte("# moved\n"+base))
	other, _ := Parse("t.yaml", []byte(strings.Replace(base, "a.crt", "b.crt", 1)))
	plain, _ := Parse("t.yaml", []byte(tlsHead+tlsTail))
	if !a.Listeners[0].Same(moved.Listeners[0]) {
		t.Errorf("moving the block changed the listener")
	}
	for _, b := range []*Config{other, plain} {
		if a.Listeners[0].Same(b.Listeners[0]) {
			t.Errorf("a TLS change is no listener change: %+v", b.Listeners[0].TLS)
		}
	}
}

// TestCheckFiles: each problem is reported at the field that names the
// file, relative paths are relative to the configuration's directory, and
// the expired certificate is the one problem that is not fatal.
func TestCheckFiles(t *testing.T) {
	dir := t.TempDir()
	ca, _ := certgen.NewCA("ca")
	good, _ := ca.Issue(certgen.Options{})
	other, _ := ca.Issue(certgen.Options{})
	expired, _ := ca.Issue(certgen.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	mustWrite := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite("good.crt", good.CertPEM)
	mustWrite("good.key", good.KeyPEM)
	mustWrite("other.key", other.KeyPEM)
	mustWrite("expired.crt", expired.CertPEM)
	mustWrite("expired.key", expired.KeyPEM)
	mustWrite("ca.crt", ca.PEM)
	mustWrite("garbage.crt", []byte("hello\n"))
	yaml := `listeners:
  - name: ok
    address: 127.0.0.1:0
    cluster: c
    tls:
      cert_file: good.crt
      key_file: good.key
      client_ca_file: ca.crt
  - name: bad
    address: 127.0.0.1:0
    cluster: c
    tls:
      certificates:
        - cert_file: missing.crt
          key_file: good.key
        - cert_file: garbage.crt
          key_file: good.key
        - cert_file: good.crt
          key_file: other.key
        - cert_file: expired.crt
          key_file: expired.key
      client_ca_file: good.key
` + tlsTail
	file := filepath.Join(dir, "vigil.yaml")
	mustWrite("vigil.yaml", []byte(yaml))
	cfg, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	errs := cfg.CheckFiles(time.Now(), nil, nil)
	if only := cfg.CheckFiles(time.Now(), func(l *Listener) bool { return l.Name == "ok" }, nil); len(only) != 0 {
		t.Fatalf("listener ok alone: %v", only)
	}
	want := []struct {
		at, path string
		is       error
		msg      string
	}{
		{"14:22", "listeners[1].tls.certificates[0].cert_file", os.ErrNotExist, "missing.crt: cannot read: no such file"},
		{"16:22", "listeners[1].tls.certificates[1].cert_file", tlsfiles.ErrBadPEM, "no PEM CERTIFICATE block (the file is not PEM"},
		{"19:21", "listeners[1].tls.certificates[2].key_file", tlsfiles.ErrKeyMismatch, "does not match the certificate"},
		{"20:22", "listeners[1].tls.certificates[3].cert_file", tlsfiles.ErrExpired, "expired"},
		{"22:23", "listeners[1].tls.client_ca_file", tlsfiles.ErrBadPEM, "no PEM CERTIFICATE block"},
	}
	if len(errs) != len(want) {
		t.Fatalf("errors:\n%v", errs)
	}
	for i, w := range want {
		e := errs[i]
		prefix := file + ":" + w.at + ": " + w.path + ": "
		if !strings.HasPrefix(e.Error(), prefix) || !strings.Contains(e.Error(), w.msg) || !errors.Is(e, w.is) {
			t.Errorf("error %d = %q, want %q...%q (%v)", i, e, prefix, w.msg, w.is)
		}
	}
	if fatal := errs.Fatal(); len(fatal) != 4 {
		t.Errorf("fatal = %v", fatal)
	}
}

const clusterTLSHead = `listeners:
  - name: api
    address: 127.0.0.1:0
    cluster: c
clusters:
  - name: c
    endpoints: [{address: 127.0.0.1:1}]
`

func TestClusterTLSSchema(t *testing.T) {
	tests := []struct {
		name string
		tls  string
		want []string
		ok   func(*ClusterTLS) bool
	}{
		{"system roots", "    tls: {}\n", nil, func(c *ClusterTLS) bool { return c.CAFile == "" && c.ServerName == "" && !c.InsecureSkipVerify }},
		{"everything", "    tls:\n      ca_file: ca.crt\n      cert_file: c.crt\n      key_file: c.key\n      server_name: api.internal\n      insecure_skip_verify: false\n", nil,
			func(c *ClusterTLS) bool {
				return c.CAFile == "ca.crt" && c.CertFile == "c.crt" && c.KeyFile == "c.key" && c.ServerName == "api.internal" && c.CAPos == (Pos{9, 16})
			}},
		{"ip server name", "    tls: {server_name: 10.0.0.1}\n", nil, func(c *ClusterTLS) bool { return c.ServerName == "10.0.0.1" }},
		{"skip verify", "    tls: {insecure_skip_verify: true}\n", nil, func(c *ClusterTLS) bool { return c.InsecureSkipVerify }},
		{"empty", "    tls:\n", []string{`t.yaml:8:9: clusters[0].tls: missing value: a mapping (tls: {} for TLS verified against the system roots)`}, nil},
		{"cert without key", "    tls: {cert_file: c.crt}\n", []string{`t.yaml:8:11: clusters[0].tls.key_file: missing: cert_file needs key_file (the PEM private key of the client certificate)`}, nil},
		{"key without cert", "    tls: {key_file: c.key}\n", []string{`t.yaml:8:11: clusters[0].tls.cert_file: missing: key_file needs cert_file (the PEM client certificate chain)`}, nil},
		{"server name with port", "    tls: {server_name: \"api:443\"}\n", []string{`t.yaml:8:24: clusters[0].tls.server_name: must be a host name or an IP address, not "api:443" (no port, scheme or path: only the name)`}, nil},
		{"bool as string", "    tls: {insecure_skip_verify: \"yes\"}\n", []string{`t.yaml:8:33: clusters[0].tls.insecure_skip_verify: must be true or false, not the string "yes"`}, nil},
		{"typo", "    tls: {ca_fle: ca.crt}\n", []string{`t.yaml:8:11: clusters[0].tls.ca_fle: unknown field "ca_fle"; did you mean "ca_file"?`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := clusterTLSHead + tt.tls
			checkLines(t, errorLines(t, data), tt.want)
			if tt.want != nil {
				return
			}
			cfg, _ := Parse("t.yaml", []byte(data))
			if ct := cfg.Clusters[0].TLS; ct == nil || !tt.ok(ct) {
				t.Fatalf("tls = %+v", ct)
			}
			var p Parser
			moved, err := p.Parse("t.yaml", []byte(data))
			if err != nil || !moved.Clusters[0].TLS.Equal(cfg.Clusters[0].TLS) {
				t.Fatalf("incremental parse: %+v, %v", moved.Clusters[0].TLS, err)
			}
			shifted, err := p.Parse("t.yaml", []byte("# one more line\n"+data))
			if err != nil || shifted.Clusters[0].TLS.Pos.Line != cfg.Clusters[0].TLS.Pos.Line+1 {
				t.Fatalf("incremental parse of the shifted file: %+v, %v", shifted.Clusters[0].TLS, err)
			}
		})
	}
}

// TestCheckClusterFiles: a cluster's CA and client certificate files are
// checked like a listener's, at their fields.
func TestCheckClusterFiles(t *testing.T) {
	dir := t.TempDir()
	ca, _ := certgen.NewCA("ca")
	good, _ := ca.Issue(certgen.Options{})
	other, _ := ca.Issue(certgen.Options{})
	expired, _ := ca.Issue(certgen.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	for name, data := range map[string][]byte{"good.crt": good.CertPEM, "good.key": good.KeyPEM, "other.key": other.KeyPEM,
		"expired.crt": expired.CertPEM, "expired.key": expired.KeyPEM, "ca.crt": ca.PEM, "garbage.crt": []byte("hello\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	yaml := `listeners:
  - name: api
    address: 127.0.0.1:0
    cluster: ok
clusters:
  - name: ok
    endpoints: [{address: 127.0.0.1:1}]
    tls: {ca_file: ca.crt, cert_file: good.crt, key_file: good.key}
  - name: missing
    endpoints: [{address: 127.0.0.1:1}]
    tls: {ca_file: nothere.crt}
  - name: garbage
    endpoints: [{address: 127.0.0.1:1}]
    tls: {ca_file: garbage.crt}
  - name: mismatch
    endpoints: [{address: 127.0.0.1:1}]
    tls: {cert_file: good.crt, key_file: other.key}
  - name: expired
    endpoints: [{address: 127.0.0.1:1}]
    tls: {cert_file: expired.crt, key_file: expired.key}
`
	file := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if only := cfg.CheckFiles(time.Now(), nil, func(c *Cluster) bool { return c.Name == "ok" }); len(only) != 0 {
		t.Fatalf("cluster ok alone: %v", only)
	}
	errs := cfg.CheckFiles(time.Now(), nil, nil)
	want := []struct {
		at, path string
		is       error
		msg      string
	}{
		{"11:20", "clusters[1].tls.ca_file", os.ErrNotExist, "nothere.crt: cannot read: no such file"},
		{"14:20", "clusters[2].tls.ca_file", tlsfiles.ErrBadPEM, "no PEM CERTIFICATE block"},
		{"17:42", "clusters[3].tls.key_file", tlsfiles.ErrKeyMismatch, "does not match the certificate"},
		{"20:22", "clusters[4].tls.cert_file", tlsfiles.ErrExpired, "expired"},
	}
	if len(errs) != len(want) {
		t.Fatalf("errors:\n%v", errs)
	}
	for i, w := range want {
		e := errs[i]
		prefix := file + ":" + w.at + ": " + w.path + ": "
		if !strings.HasPrefix(e.Error(), prefix) || !strings.Contains(e.Error(), w.msg) || !errors.Is(e, w.is) {
			t.Errorf("error %d = %q, want %q...%q (%v)", i, e, prefix, w.msg, w.is)
		}
	}
}
