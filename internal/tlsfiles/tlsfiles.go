// Package tlsfiles loads the PEM files a TLS configuration names (a
// certificate chain with its private key, a bundle of CA certificates) and
// says precisely what is wrong with one that cannot serve: missing, not
// PEM, a key that does not belong to the certificate, a certificate out of
// its validity period. Its errors wrap sentinel values (ErrBadPEM,
// ErrKeyMismatch, ErrExpired, ErrNotYetValid; fs.ErrNotExist for a missing
// file) so callers decide with errors.Is, never by reading messages.
//
// It only reads and parses, with crypto/tls and crypto/x509; keeping the
// files current is tlsconf's business.
package tlsfiles

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// Sentinels wrapped by the errors of this package.
var (
	// ErrBadPEM: the file holds no usable PEM block of the expected kind,
	// or a block that does not parse.
	ErrBadPEM = errors.New("bad PEM")
	// ErrKeyMismatch: the private key is not the certificate's.
	ErrKeyMismatch = errors.New("key does not match certificate")
	// ErrExpired: the certificate's NotAfter has passed.
	ErrExpired = errors.New("certificate expired")
	// ErrNotYetValid: the certificate's NotBefore is still to come.
	ErrNotYetValid = errors.New("certificate not yet valid")
)

// Which file of a pair an error concerns.
const (
	CertFile = "cert_file"
	KeyFile  = "key_file"
)

// Error is a problem with one file.
type Error struct {
	// Field is CertFile or KeyFile for a pair, or "" for a CA file.
	Field string
	File  string
	// Msg says what is wrong, for people.
	Msg string
	// Err is a sentinel of this package, or the error reading the file.
	Err error
}

func (e *Error) Error() string { return e.File + ": " + e.Msg }

// Unwrap returns the sentinel or read error.
func (e *Error) Unwrap() error { return e.Err }

// Pair is a certificate chain with its private key, as loaded.
type Pair struct {
	Cert *tls.Certificate
	// Sum identifies the bytes both files held, to tell a real change
	// from a rewrite of the same content.
	Sum [sha256.Size]byte
}

// Leaf is the pair's end-entity certificate.
func (p *Pair) Leaf() *x509.Certificate { return p.Cert.Leaf }

// LoadPair reads a PEM certificate chain and its PEM private key. It
// checks that the key matches the certificate, and reports a certificate
// outside its validity period at now as ErrExpired or ErrNotYetValid
// together with the pair, which can still be served (the caller decides).
func LoadPair(certFile, keyFile string, now time.Time) (*Pair, error) {
	certPEM, err := read(CertFile, certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read(KeyFile, keyFile)
	if err != nil {
		return nil, err
	}
	if _, err := blocks(CertFile, certFile, certPEM, "CERTIFICATE"); err != nil {
		return nil, err
	}
	if err := hasKey(keyFile, keyPEM); err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, classifyPairError(certFile, keyFile, certPEM, keyPEM, err)
	}
	p := &Pair{Cert: &cert, Sum: sha256.Sum256(append(append(certPEM, 0), keyPEM...))}
	if err := Validity(CertFile, certFile, cert.Leaf, now); err != nil {
		return p, err
	}
	return p, nil
}

// Validity reports a certificate outside its validity period at now.
func Validity(field, file string, c *x509.Certificate, now time.Time) error {
	switch {
	case now.After(c.NotAfter):
		return &Error{Field: field, File: file, Err: ErrExpired,
			Msg: fmt.Sprintf("certificate %s expired %s ago (not after %s)", subject(c), roundAge(now.Sub(c.NotAfter)), c.NotAfter.UTC().Format(time.RFC3339))}
	case now.Before(c.NotBefore):
		return &Error{Field: field, File: file, Err: ErrNotYetValid,
			Msg: fmt.Sprintf("certificate %s is not valid before %s", subject(c), c.NotBefore.UTC().Format(time.RFC3339))}
	}
	return nil
}

// CAs is a bundle of CA certificates.
type CAs struct {
	Pool  *x509.CertPool
	Certs []*x509.Certificate
	Sum   [sha256.Size]byte
}

// LoadCAs reads a PEM bundle of one or more CA certificates. Expired CA
// certificates are kept (verification will refuse chains through them);
// the first one out of its validity period is reported as ErrExpired or
// ErrNotYetValid together with the bundle.
func LoadCAs(file string, now time.Time) (*CAs, error) {
	data, err := read("", file)
	if err != nil {
		return nil, err
	}
	ders, err := blocks("", file, data, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	cas := &CAs{Pool: x509.NewCertPool(), Sum: sha256.Sum256(data)}
	var validity error
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, &Error{File: file, Err: ErrBadPEM, Msg: fmt.Sprintf("certificate %d of the bundle does not parse: %v", i+1, err)}
		}
		cas.Pool.AddCert(c)
		cas.Certs = append(cas.Certs, c)
		if validity == nil {
			validity = Validity("", file, c, now)
		}
	}
	return cas, validity
}

func read(field, file string) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		msg := err.Error()
		var pe *fs.PathError
		if errors.As(err, &pe) {
			msg = pe.Err.Error()
		}
		if errors.Is(err, fs.ErrNotExist) {
			msg = "no such file"
		}
		return nil, &Error{Field: field, File: file, Msg: "cannot read: " + msg, Err: err}
	}
	return data, nil
}

// blocks returns the DER bytes of every PEM block of type kind in data, or
// an ErrBadPEM error when there is none.
func blocks(field, file string, data []byte, kind string) ([][]byte, error) {
	var ders [][]byte
	var others []string
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == kind {
			ders = append(ders, b.Bytes)
		} else {
			others = append(others, b.Type)
		}
	}
	if len(ders) > 0 {
		return ders, nil
	}
	msg := fmt.Sprintf("no PEM %s block", kind)
	switch {
	case len(others) > 0:
		msg += fmt.Sprintf(" (found %q: is this the key file?)", others[0])
	case len(bytes.TrimSpace(data)) == 0:
		msg += " (the file is empty)"
	case !bytes.Contains(data, []byte("-----BEGIN")):
		msg += " (the file is not PEM; DER files must be converted: openssl x509 -inform der)"
	}
	return nil, &Error{Field: field, File: file, Msg: msg, Err: ErrBadPEM}
}

// hasKey checks that a key file holds a PEM private key block.
func hasKey(file string, data []byte) error {
	rest := data
	var others []string
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "PRIVATE KEY" || bytes.HasSuffix([]byte(b.Type), []byte(" PRIVATE KEY")) {
			if b.Type == "ENCRYPTED PRIVATE KEY" || b.Headers["Proc-Type"] != "" {
				return &Error{Field: KeyFile, File: file, Err: ErrBadPEM, Msg: "the private key is encrypted; vigil needs it unencrypted"}
			}
			return nil
		}
		others = append(others, b.Type)
	}
	msg := "no PEM PRIVATE KEY block"
	switch {
	case len(others) > 0:
		msg += fmt.Sprintf(" (found %q: is this the certificate file?)", others[0])
	case len(bytes.TrimSpace(data)) == 0:
		msg += " (the file is empty)"
	case !bytes.Contains(data, []byte("-----BEGIN")):
		msg += " (the file is not PEM)"
	}
	return &Error{Field: KeyFile, File: file, Msg: msg, Err: ErrBadPEM}
}

// classifyPairError turns tls.X509KeyPair's error into an Error naming the
// file at fault: the certificate does not parse, the key does not parse,
// or they do not belong together.
func classifyPairError(certFile, keyFile string, certPEM, keyPEM []byte, err error) error {
	if ders, _ := blocks(CertFile, certFile, certPEM, "CERTIFICATE"); len(ders) > 0 {
		if _, perr := x509.ParseCertificate(ders[0]); perr != nil {
			return &Error{Field: CertFile, File: certFile, Err: ErrBadPEM, Msg: "the certificate does not parse: " + perr.Error()}
		}
	}
	// A key that parses alone but not with this certificate is a
	// mismatch, not a bad file.
	if !keyParses(keyPEM) {
		return &Error{Field: KeyFile, File: keyFile, Err: ErrBadPEM, Msg: "the private key does not parse: " + err.Error()}
	}
	return &Error{Field: KeyFile, File: keyFile, Err: ErrKeyMismatch,
		Msg: fmt.Sprintf("the private key does not match the certificate in %s", certFile)}
}

// keyParses reports whether the first private key block of data parses in
// one of the encodings tls.X509KeyPair accepts.
func keyParses(data []byte) bool {
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return false
		}
		if b.Type != "PRIVATE KEY" && !bytes.HasSuffix([]byte(b.Type), []byte(" PRIVATE KEY")) {
			continue
		}
		if _, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
			return true
		}
		if _, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
			return true
		}
		if _, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
			return true
		}
		return false
	}
}

func subject(c *x509.Certificate) string {
	if len(c.DNSNames) > 0 {
		return fmt.Sprintf("%q", c.DNSNames[0])
	}
	if c.Subject.CommonName != "" {
		return fmt.Sprintf("%q", c.Subject.CommonName)
	}
	if len(c.IPAddresses) > 0 {
		return c.IPAddresses[0].String()
	}
	return "(no name)"
}

// roundAge renders how long ago something happened at a useful precision.
func roundAge(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	case d >= time.Hour:
		return d.Round(time.Minute).String()
	default:
		return d.Round(time.Second).String()
	}
}
