package checker

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/internal/certgen"
)

// staticTLS is a TLS whose every connection uses cfg with the address's
// host as server name (as vigil's does without server_name).
type staticTLS struct{ cfg *tls.Config }

func (s *staticTLS) ClientConfig(address string, h2 bool) *tls.Config {
	c := s.cfg.Clone()
	if c.ServerName == "" {
		c.ServerName, _, _ = net.SplitHostPort(address)
	}
	if h2 {
		c.NextProtos = []string{"h2"}
	}
	return c
}

// tlsTestServer accepts connections and hands each to serve.
func tlsTestServer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
				serve(nc)
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestTLSErrors: each way a handshake with a backend fails is told by
// the error's type, named in its text, and hinted at.
func TestTLSErrors(t *testing.T) {
	ca, _ := certgen.NewCA("our CA")
	other, _ := certgen.NewCA("their CA")
	issue := func(ca *certgen.CA, opts certgen.Options) tls.Certificate {
		l, err := ca.Issue(opts)
		if err != nil {
			t.Fatal(err)
		}
		return l.TLS()
	}
	tlsServer := func(cert tls.Certificate) func(net.Conn) {
		return func(nc net.Conn) {
			_ = tls.Server(nc, &tls.Config{Certificates: []tls.Certificate{cert}}).Handshake()
		}
	}
	client := &staticTLS{cfg: &tls.Config{RootCAs: ca.Pool()}}
	tests := []struct {
		name    string
		serve   func(net.Conn)
		client  TLS
		problem TLSProblem
		text    string
		hint    string
	}{
		{"unknown authority", tlsServer(issue(other, certgen.Options{Names: []string{"127.0.0.1"}})), client,
			TLSUnknownAuthority, "unknown authority", `issued by "CN=their CA`},
		{"name mismatch", tlsServer(issue(ca, certgen.Options{Names: []string{"api.internal"}})), client,
			TLSNameMismatch, `not valid for "127.0.0.1"`, `for api.internal, not "127.0.0.1": set the cluster's tls.server_name`},
		{"server name mismatch", tlsServer(issue(ca, certgen.Options{Names: []string{"127.0.0.1"}})), &staticTLS{cfg: &tls.Config{RootCAs: ca.Pool(), ServerName: "api.internal"}},
			TLSNameMismatch, `not valid for "api.internal"`, "tls.server_name"},
		{"expired", tlsServer(issue(ca, certgen.Options{Names: []string{"127.0.0.1"}, NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})), client,
			TLSExpired, "expired", "expired at"},
		{"not yet valid", tlsServer(issue(ca, certgen.Options{Names: []string{"127.0.0.1"}, NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour)})), client,
			TLSExpired, "not yet valid", "not valid before"},
		{"plaintext server", func(nc net.Conn) {
			// An h2c server's preface: SETTINGS, before reading anything.
			_, _ = nc.Write([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0})
			_, _ = nc.Read(make([]byte, 1024))
		}, client, TLSNotTLS, "does not speak TLS", "remove the cluster's tls section"},
		{"closed", func(nc net.Conn) { _, _ = nc.Read(make([]byte, 1024)) }, client, TLSClosed, "closed the connection", "may not speak TLS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := tlsTestServer(t, tt.serve)
			r := tcpOnce(context.Background(), addr, 5*time.Second, tt.client)
			var te *TLSError
			if r.OK || !errors.As(r.Err, &te) || te.Problem != tt.problem {
				t.Fatalf("result %+v, want a TLSError %v", r, tt.problem)
			}
			if r.Reason != reasonUnavailable || r.Cause != CauseTransport || !strings.Contains(r.Err.Error(), tt.text) {
				t.Errorf("reason %s cause %v error %q, want UNAVAILABLE transport naming %q", r.Reason, r.Cause, r.Err, tt.text)
			}
			hint := Hint(Status{Health: Unhealthy, Reason: r.Reason, Cause: r.Cause}, r, Config{TLS: tt.client})
			if !strings.Contains(hint, tt.hint) {
				t.Errorf("hint %q does not say %q", hint, tt.hint)
			}
		})
	}

	// A handshake that runs out of time is a timeout, no TLS problem.
	addr := tlsTestServer(t, func(nc net.Conn) { _, _ = io.Copy(io.Discard, nc) })
	r := tcpOnce(context.Background(), addr, 100*time.Millisecond, client)
	var te *TLSError
	if r.OK || errors.As(r.Err, &te) || r.Reason != reasonDeadlineExceeded {
		t.Errorf("a stalled handshake: %+v, want DEADLINE_EXCEEDED", r)
	}
	// A good one passes.
	good := tlsTestServer(t, tlsServer(issue(ca, certgen.Options{Names: []string{"127.0.0.1"}})))
	if r := tcpOnce(context.Background(), good, 5*time.Second, client); !r.OK {
		t.Errorf("a good handshake: %+v", r)
	}
}
