package tlsconf

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/internal/certgen"
	"github.com/vigil-proxy/vigil/internal/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a log sink safe for the Store's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func runStore(t *testing.T) (*Store, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	st := New(Options{Logger: slog.New(slog.NewTextHandler(logs, nil)), Debounce: 20 * time.Millisecond})
	t.Cleanup(st.Start())
	return st, logs
}

func issue(t *testing.T, ca *certgen.CA, names ...string) *certgen.Leaf {
	t.Helper()
	l, err := ca.Issue(certgen.Options{Names: names})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// servedSerial is the serial of the certificate a handshake with cfg
// presents for sni.
func servedSerial(t *testing.T, srv *Server, sni string) string {
	t.Helper()
	cfg := srv.Config()
	hello := &tls.ClientHelloInfo{ServerName: sni, SupportedVersions: []uint16{tls.VersionTLS13}, SignatureSchemes: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256, tls.PSSWithSHA256}, SupportedCurves: []tls.CurveID{tls.CurveP256}, CipherSuites: []uint16{tls.TLS_AES_128_GCM_SHA256}}
	for i := range cfg.Certificates {
		if hello.SupportsCertificate(&cfg.Certificates[i]) == nil {
			return cfg.Certificates[i].Leaf.SerialNumber.String()
		}
	}
	return cfg.Certificates[0].Leaf.SerialNumber.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRotation: a certificate written in place, renamed over, and swapped
// through a Kubernetes Secret's ..data symlink is served by the next
// handshake; a broken one is rejected and the previous one keeps serving.
func TestRotation(t *testing.T) {
	st, logs := runStore(t)
	ca, _ := certgen.NewCA("ca")
	dir := t.TempDir()
	// The Kubernetes layout: tls.crt -> ..data/tls.crt, ..data -> ..v1.
	mustMkdir := func(p string) {
		if err := os.Mkdir(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mustSymlink := func(target, link string) {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	mustMkdir("..v1")
	first := issue(t, ca, "api.example.com")
	writeFile(t, filepath.Join(dir, "..v1", "tls.crt"), first.CertPEM)
	writeFile(t, filepath.Join(dir, "..v1", "tls.key"), first.KeyPEM)
	mustSymlink("..v1", "..data")
	mustSymlink("..data/tls.crt", "tls.crt")
	mustSymlink("..data/tls.key", "tls.key")
	plainCert, plainKey := filepath.Join(dir, "plain.crt"), filepath.Join(dir, "plain.key")
	plain := issue(t, ca, "*.apps.example.com")
	writeFile(t, plainCert, plain.CertPEM)
	writeFile(t, plainKey, plain.KeyPEM)

	var updates sync.Map
	spec := config.ListenerTLS{MinVersion: config.TLS12, Certificates: []config.CertificatePair{
		{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")},
		{CertFile: plainCert, KeyFile: plainKey},
	}}
	srv, err := st.Server(spec, ServerOptions{Listener: "api", NextProtos: []string{"h2"}, OnUpdate: func(c []Cert) { updates.Store(len(c), c) }})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	serial := func(l *certgen.Leaf) string { return l.Cert.SerialNumber.String() }
	if got := servedSerial(t, srv, "api.example.com"); got != serial(first) {
		t.Fatalf("serving %s, want the first certificate", got)
	}
	if got := servedSerial(t, srv, "x.apps.example.com"); got != serial(plain) {
		t.Fatalf("serving %s for the wildcard, want %s", got, serial(plain))
	}

	// 1. The ..data swap.
	second := issue(t, ca, "api.example.com")
	mustMkdir("..v2")
	writeFile(t, filepath.Join(dir, "..v2", "tls.crt"), second.CertPEM)
	writeFile(t, filepath.Join(dir, "..v2", "tls.key"), second.KeyPEM)
	mustSymlink("..v2", "..data_tmp")
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	_ = os.RemoveAll(filepath.Join(dir, "..v1"))
	waitFor(t, "the ..data swap", func() bool { return servedSerial(t, srv, "api.example.com") == serial(second) })

	// 2. Written in place: the key first, then the certificate (a
	// mismatch in between may be rejected; the end state must serve).
	third := issue(t, ca, "*.apps.example.com")
	writeFile(t, plainKey, third.KeyPEM)
	writeFile(t, plainCert, third.CertPEM)
	waitFor(t, "the write in place", func() bool { return servedSerial(t, srv, "y.apps.example.com") == serial(third) })

	// 3. Renamed over.
	fourth := issue(t, ca, "*.apps.example.com")
	writeFile(t, plainCert+".tmp", fourth.CertPEM)
	writeFile(t, plainKey+".tmp", fourth.KeyPEM)
	if err := os.Rename(plainKey+".tmp", plainKey); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(plainCert+".tmp", plainCert); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rename", func() bool { return servedSerial(t, srv, "y.apps.example.com") == serial(fourth) })

	// 4. A broken rotation: garbage in the certificate file. Rejected,
	// logged, and the fourth certificate keeps serving.
	writeFile(t, plainCert, []byte("not a certificate\n"))
	waitFor(t, "the rejection", func() bool { return strings.Contains(logs.String(), "no PEM CERTIFICATE block") })
	if got := servedSerial(t, srv, "y.apps.example.com"); got != serial(fourth) {
		t.Fatalf("after a broken rotation serving %s, want the previous certificate", got)
	}
	line := ""
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "tls reload rejected") && strings.Contains(l, "no PEM CERTIFICATE block") {
			line = l
		}
	}
	if !strings.Contains(line, "level=ERROR") || !strings.Contains(line, "listener=api") || !strings.Contains(line, "file="+plainCert) ||
		!strings.Contains(line, `kept="the previous file keeps serving"`) {
		t.Fatalf("rejection record: %s", line)
	}
	// A mismatched key is rejected too.
	writeFile(t, plainCert, fourth.CertPEM)
	writeFile(t, plainKey, third.KeyPEM)
	waitFor(t, "the mismatch", func() bool { return strings.Contains(logs.String(), "does not match the certificate") })
	if got := servedSerial(t, srv, "y.apps.example.com"); got != serial(fourth) {
		t.Fatalf("after a mismatched key serving %s", got)
	}
	if v, ok := updates.Load(2); !ok || len(v.([]Cert)) != 2 {
		t.Fatalf("OnUpdate not called with both certificates")
	}
}

// TestClientCAReload: mTLS follows a replaced client CA file.
func TestClientCAReload(t *testing.T) {
	st, _ := runStore(t)
	dir := t.TempDir()
	ca1, _ := certgen.NewCA("ca1")
	ca2, _ := certgen.NewCA("ca2")
	leaf := issue(t, ca1, "localhost")
	certFile, keyFile, _ := leaf.Write(dir, "srv")
	caFile, _ := ca1.Write(dir, "clients")
	srv, err := st.Server(config.ListenerTLS{Certificates: []config.CertificatePair{{CertFile: certFile, KeyFile: keyFile}}, ClientCAFile: caFile}, ServerOptions{Listener: "l"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	has := func(ca *certgen.CA) bool {
		cfg := srv.Config()
		_, err := ca.Cert.Verify(x509.VerifyOptions{Roots: cfg.ClientCAs})
		return cfg.ClientAuth == tls.RequireAndVerifyClientCert && err == nil
	}
	if !has(ca1) {
		t.Fatal("client CA not in force")
	}
	writeFile(t, caFile, ca2.PEM)
	waitFor(t, "the new client CA", func() bool { return has(ca2) && !has(ca1) })
}

func TestServerLoadErrors(t *testing.T) {
	st, _ := runStore(t)
	dir := t.TempDir()
	if _, err := st.Server(config.ListenerTLS{Certificates: []config.CertificatePair{{CertFile: filepath.Join(dir, "x.crt"), KeyFile: filepath.Join(dir, "x.key")}}}, ServerOptions{}); err == nil {
		t.Fatal("a missing file loaded")
	}
}
