package tlsfiles

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/internal/certgen"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLoadPair(t *testing.T) {
	dir := t.TempDir()
	ca, err := certgen.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	good, _ := ca.Issue(certgen.Options{Names: []string{"a.example.com"}})
	other, _ := ca.Issue(certgen.Options{Names: []string{"b.example.com"}})
	rsaLeaf, _ := ca.Issue(certgen.Options{Key: certgen.RSA2048})
	expired, _ := ca.Issue(certgen.Options{NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(-49 * time.Hour)})
	future, _ := ca.Issue(certgen.Options{NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour)})
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodCert, goodKey := write("good.crt", good.CertPEM), write("good.key", good.KeyPEM)
	badKeyDER := strings.Replace(string(good.KeyPEM), "MIG", "MIX", 1)
	tests := []struct {
		name       string
		cert, key  string
		want       error
		field, msg string
	}{
		{"good", goodCert, goodKey, nil, "", ""},
		{"rsa", write("rsa.crt", rsaLeaf.CertPEM), write("rsa.key", rsaLeaf.KeyPEM), nil, "", ""},
		{"missing cert", filepath.Join(dir, "nope.crt"), goodKey, fs.ErrNotExist, CertFile, "cannot read: no such file"},
		{"missing key", goodCert, filepath.Join(dir, "nope.key"), fs.ErrNotExist, KeyFile, "cannot read: no such file"},
		{"empty cert", write("empty.crt", nil), goodKey, ErrBadPEM, CertFile, "the file is empty"},
		{"not pem", write("der.crt", good.Cert.Raw), goodKey, ErrBadPEM, CertFile, "not PEM"},
		{"key as cert", goodKey, goodKey, ErrBadPEM, CertFile, "is this the key file?"},
		{"cert as key", goodCert, goodCert, ErrBadPEM, KeyFile, "is this the certificate file?"},
		{"garbled cert", write("garbled.crt", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")), goodKey, ErrBadPEM, CertFile, "does not parse"},
		{"garbled key", goodCert, write("garbled.key", []byte(badKeyDER)), ErrBadPEM, KeyFile, "does not parse"},
		{"mismatch", goodCert, write("other.key", other.KeyPEM), ErrKeyMismatch, KeyFile, "does not match the certificate"},
		{"expired", write("expired.crt", expired.CertPEM), write("expired.key", expired.KeyPEM), ErrExpired, CertFile, "expired 2 days ago"},
		{"not yet valid", write("future.crt", future.CertPEM), write("future.key", future.KeyPEM), ErrNotYetValid, CertFile, "not valid before"},
		{"encrypted key", goodCert, write("enc.key", []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")), ErrBadPEM, KeyFile, "encrypted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := LoadPair(tt.cert, tt.key, time.Now())
			if tt.want == nil {
				if err != nil || p == nil || p.Leaf() == nil {
					t.Fatalf("LoadPair = %v, %v", p, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			var fe *Error
			if !errors.As(err, &fe) || fe.Field != tt.field || !strings.Contains(fe.Msg, tt.msg) {
				t.Fatalf("err = %#v, want field %s and a message with %q", err, tt.field, tt.msg)
			}
			validity := errors.Is(err, ErrExpired) || errors.Is(err, ErrNotYetValid)
			if validity != (p != nil) {
				t.Fatalf("pair %v with %v: a pair comes back only with a validity problem", p, err)
			}
		})
	}
}

func TestLoadCAs(t *testing.T) {
	dir := t.TempDir()
	a, _ := certgen.NewCA("a")
	b, _ := certgen.NewCA("b")
	bundle := filepath.Join(dir, "bundle.pem")
	if err := os.WriteFile(bundle, append(append([]byte{}, a.PEM...), b.PEM...), 0o644); err != nil {
		t.Fatal(err)
	}
	cas, err := LoadCAs(bundle, time.Now())
	if err != nil || len(cas.Certs) != 2 {
		t.Fatalf("LoadCAs = %v, %v", cas, err)
	}
	leaf, _ := b.Issue(certgen.Options{})
	if _, err := leaf.Cert.Verify(x509VerifyOptions(cas)); err != nil {
		t.Fatalf("a leaf of the second CA does not verify: %v", err)
	}
	if _, err := LoadCAs(filepath.Join(dir, "none.pem"), time.Now()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing bundle: %v", err)
	}
	key := filepath.Join(dir, "k.pem")
	_ = os.WriteFile(key, leaf.KeyPEM, 0o600)
	if _, err := LoadCAs(key, time.Now()); !errors.Is(err, ErrBadPEM) {
		t.Fatalf("key as bundle: %v", err)
	}
}
