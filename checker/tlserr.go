package checker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"
)

// TLSProblem says why a TLS handshake with an endpoint failed.
type TLSProblem uint8

// TLS problems. Each is told from the handshake's error by its type
// (x509 and crypto/tls errors), never by its text.
const (
	// TLSOther: none of the below (a cipher or version mismatch, a
	// handshake message that does not parse).
	TLSOther TLSProblem = iota
	// TLSUnknownAuthority: the endpoint's certificate is not signed by a
	// CA vigil trusts (ca_file, or the system roots).
	TLSUnknownAuthority
	// TLSNameMismatch: the certificate is not for the name verified
	// (server_name, or the endpoint's host).
	TLSNameMismatch
	// TLSExpired: the certificate has expired or is not valid yet.
	TLSExpired
	// TLSInvalid: the certificate fails verification otherwise (not for
	// server authentication, a CA constraint).
	TLSInvalid
	// TLSNotTLS: the endpoint answered with bytes that are no TLS record:
	// it speaks plaintext.
	TLSNotTLS
	// TLSClosed: the endpoint closed the connection during the
	// handshake, without a TLS alert.
	TLSClosed
	// TLSAlert: the endpoint refused the handshake with a TLS alert (a
	// client certificate it does not accept, no common protocol).
	TLSAlert
)

var tlsProblemNames = [...]string{"tls handshake failed", "unknown authority", "name mismatch", "certificate expired",
	"certificate invalid", "not TLS", "closed during the TLS handshake", "refused by the endpoint"}

func (p TLSProblem) String() string {
	if int(p) < len(tlsProblemNames) {
		return tlsProblemNames[p]
	}
	return fmt.Sprintf("tlsproblem(%d)", uint8(p))
}

// TLSError is a TLS handshake with an endpoint that failed. Err is
// crypto/tls's error (errors.As reaches the x509 error under it).
type TLSError struct {
	Problem TLSProblem
	// ServerName is the name the certificate was verified against.
	ServerName string
	// Leaf is the endpoint's certificate, when the failure was its
	// verification.
	Leaf *x509.Certificate
	Err  error
}

func (e *TLSError) Error() string {
	switch e.Problem {
	case TLSNameMismatch:
		return fmt.Sprintf("tls: name mismatch: the endpoint's certificate is not valid for %q: %v", e.ServerName, e.Err)
	case TLSUnknownAuthority:
		return "tls: unknown authority: the endpoint's certificate is not signed by a trusted CA: " + e.Err.Error()
	case TLSExpired:
		return "tls: certificate expired or not yet valid: " + e.Err.Error()
	case TLSNotTLS:
		return "tls: the endpoint does not speak TLS (it answered in plaintext): " + e.Err.Error()
	case TLSClosed:
		return "tls: the endpoint closed the connection during the TLS handshake: " + e.Err.Error()
	case TLSAlert:
		return "tls: the endpoint refused the handshake: " + e.Err.Error()
	}
	return "tls: handshake failed: " + e.Err.Error()
}

func (e *TLSError) Unwrap() error { return e.Err }

// newTLSError classifies err, a failed client handshake with cfg. A
// context's end or a socket timeout is returned as it is: the handshake
// did not fail, it ran out of time.
func newTLSError(err error, cfg *tls.Config) error {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || (errors.As(err, &ne) && ne.Timeout()) {
		return err
	}
	te := &TLSError{Problem: TLSOther, ServerName: cfg.ServerName, Err: err}
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		header   tls.RecordHeaderError
		alert    tls.AlertError
		verify   *tls.CertificateVerificationError
	)
	if errors.As(err, &verify) && len(verify.UnverifiedCertificates) > 0 {
		te.Leaf = verify.UnverifiedCertificates[0]
	}
	switch {
	case errors.As(err, &unknown):
		te.Problem = TLSUnknownAuthority
	case errors.As(err, &hostname):
		te.Problem = TLSNameMismatch
		te.Leaf = hostname.Certificate
	case errors.As(err, &invalid):
		te.Problem = TLSInvalid
		if invalid.Reason == x509.Expired {
			te.Problem = TLSExpired
		}
		te.Leaf = invalid.Cert
	case errors.As(err, &header):
		te.Problem = TLSNotTLS
	case errors.As(err, &alert) || isRemoteAlert(err):
		te.Problem = TLSAlert
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err):
		te.Problem = TLSClosed
	}
	return te
}

// certNames lists the names a certificate is valid for, for a hint.
func certNames(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	names := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName+" (common name only, which is not verified)")
	}
	return strings.Join(names, ", ")
}

// tlsHint is the hint of a failure whose cause is err.
func tlsHint(err error) string {
	var te *TLSError
	if !errors.As(err, &te) {
		// Under TLS 1.3 the client's handshake is done before the server
		// has judged its certificate: a refusal comes as an alert on the
		// first read.
		var alert tls.AlertError
		if errors.As(err, &alert) || isRemoteAlert(err) {
			return "the endpoint refused the TLS connection: if it requires client certificates, set the cluster's tls.cert_file and key_file to one its CA signed"
		}
		return ""
	}
	switch te.Problem {
	case TLSUnknownAuthority:
		issuer := ""
		if te.Leaf != nil {
			issuer = fmt.Sprintf(" (it was issued by %q)", te.Leaf.Issuer.String())
		}
		return "the endpoint's certificate is not signed by a CA in the cluster's tls.ca_file, or in the system roots without one" + issuer + ": set tls.ca_file to the CA that issued it"
	case TLSNameMismatch:
		names := certNames(te.Leaf)
		if names == "" {
			names = "other names"
		}
		return fmt.Sprintf("the endpoint's certificate is for %s, not %q: set the cluster's tls.server_name to one of its names, or reissue the certificate with this one", names, te.ServerName)
	case TLSExpired:
		if te.Leaf != nil {
			if now := time.Now(); now.After(te.Leaf.NotAfter) {
				return fmt.Sprintf("the endpoint's certificate expired at %s: renew it on the backend", te.Leaf.NotAfter.UTC().Format(time.RFC3339))
			}
			return fmt.Sprintf("the endpoint's certificate is not valid before %s: check the clocks, or the backend's certificate", te.Leaf.NotBefore.UTC().Format(time.RFC3339))
		}
		return "the endpoint's certificate is outside its validity period: renew it on the backend, or check the clocks"
	case TLSNotTLS:
		return "the endpoint speaks plaintext (h2c) while the cluster has tls: remove the cluster's tls section, or serve TLS on the backend"
	case TLSClosed:
		return "the endpoint closed the connection in the middle of the TLS handshake: it may not speak TLS, or it wants a client certificate (set the cluster's tls.cert_file and key_file)"
	case TLSAlert:
		return "the endpoint refused the handshake: if it requires client certificates, set the cluster's tls.cert_file and key_file to one its CA signed"
	}
	return ""
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// isRemoteAlert reports whether err is a TLS alert the peer sent:
// crypto/tls reports one as a *net.OpError with Op "remote error" around
// its unexported alert type (tls.AlertError is QUIC's).
func isRemoteAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}
