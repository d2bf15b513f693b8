package tlsterm

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/internal/certgen"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type pki struct {
	ca, otherCA *certgen.CA
	server      tls.Certificate
	client      tls.Certificate // signed by ca
	stranger    tls.Certificate // signed by otherCA
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	ca, err := certgen.NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := certgen.NewCA("other")
	srv, _ := ca.Issue(certgen.Options{Names: []string{"api.example.com", "127.0.0.1"}})
	cli, _ := ca.Issue(certgen.Options{Names: []string{"client"}})
	str, _ := other.Issue(certgen.Options{Names: []string{"client"}})
	return &pki{ca: ca, otherCA: other, server: srv.TLS(), client: cli.TLS(), stranger: str.TLS()}
}

// results records what OnHandshake was told.
type results struct {
	mu  sync.Mutex
	got []Result
}

func (r *results) add(res Result, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, res)
}

func (r *results) last(t *testing.T) Result {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		n := len(r.got)
		var res Result
		if n > 0 {
			res = r.got[n-1]
		}
		r.mu.Unlock()
		if n > 0 {
			return res
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no handshake result")
	return ""
}

// serve runs a Listener on 127.0.0.1 with cfg, echoing one line per
// accepted connection, and returns its address.
func serve(t *testing.T, opts Options) (string, *results) {
	t.Helper()
	rs := &results{}
	opts.OnHandshake = rs.add
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := New(opts).Listen(inner)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				buf := make([]byte, 64)
				n, _ := c.Read(buf)
				_, _ = c.Write(buf[:n])
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	return inner.Addr().String(), rs
}

func static(cfg *tls.Config) func() *tls.Config { return func() *tls.Config { return cfg } }

// dial handshakes as a client and exchanges one message.
func dial(addr string, cfg *tls.Config) (*tls.ConnectionState, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return nil, fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	st := c.ConnectionState()
	return &st, nil
}

func TestHandshakes(t *testing.T) {
	p := newPKI(t)
	serverCfg := &tls.Config{Certificates: []tls.Certificate{p.server}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12}
	mtls := serverCfg.Clone()
	mtls.ClientAuth, mtls.ClientCAs = tls.RequireAndVerifyClientCert, p.ca.Pool()
	only13 := serverCfg.Clone()
	only13.MinVersion = tls.VersionTLS13
	client := func(mod func(c *tls.Config)) *tls.Config {
		c := &tls.Config{RootCAs: p.ca.Pool(), ServerName: "api.example.com", NextProtos: []string{"h2"}}
		if mod != nil {
			mod(c)
		}
		return c
	}
	tests := []struct {
		name      string
		server    *tls.Config
		client    *tls.Config
		want      Result
		clientErr string // in the client's error, "" for success
	}{
		{"h2", serverCfg, client(nil), ResultOK, ""},
		{"no ALPN", serverCfg, client(func(c *tls.Config) { c.NextProtos = nil }), ResultALPN, "internal error"},
		{"http/1.1 only", serverCfg, client(func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }), ResultALPN, "no application protocol"},
		{"tls 1.2 client to 1.3 only", only13, client(func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }), ResultVersion, "protocol version not supported"},
		{"tls 1.2 client", serverCfg, client(func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }), ResultOK, ""},
		{"mtls good", mtls, client(func(c *tls.Config) { c.Certificates = []tls.Certificate{p.client} }), ResultOK, ""},
		{"mtls none", mtls, client(nil), ResultClientCert, "certificate required"},
		{"mtls other CA", mtls, client(func(c *tls.Config) {
			// Go's client sends only a certificate of a CA the server
			// asks for: force it, as other clients do.
			c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &p.stranger, nil }
		}), ResultClientCert, "unknown certificate authority"},
		{"mtls none, tls 1.2", mtls, client(func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }), ResultClientCert, "handshake failure"},
		{"client refuses vigil", serverCfg, client(func(c *tls.Config) { c.RootCAs = p.otherCA.Pool() }), ResultError, "unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, rs := serve(t, Options{Config: static(tt.server), RequireALPN: "h2"})
			_, err := dial(addr, tt.client)
			if tt.clientErr == "" && err != nil || tt.clientErr != "" && (err == nil || !strings.Contains(err.Error(), tt.clientErr)) {
				t.Fatalf("client: %v, want an error with %q", err, tt.clientErr)
			}
			if got := rs.last(t); got != tt.want {
				t.Fatalf("result %s, want %s", got, tt.want)
			}
		})
	}
}

// TestSNI: several certificates, the client's server name picks one
// (wildcards too), the first is the default.
func TestSNI(t *testing.T) {
	ca, _ := certgen.NewCA("ca")
	issue := func(names ...string) tls.Certificate {
		l, err := ca.Issue(certgen.Options{Names: names})
		if err != nil {
			t.Fatal(err)
		}
		return l.TLS()
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{issue("default.example.com"), issue("api.example.com"), issue("*.apps.example.com")}, NextProtos: []string{"h2"}}
	addr, _ := serve(t, Options{Config: static(cfg), RequireALPN: "h2"})
	for sni, want := range map[string]string{
		"api.example.com":      "api.example.com",
		"x.apps.example.com":   "*.apps.example.com",
		"API.example.com":      "api.example.com",
		"other.example.com":    "default.example.com",
		"":                     "default.example.com",
		"a.b.apps.example.com": "default.example.com", // a wildcard matches one label
	} {
		st, err := dial(addr, &tls.Config{ServerName: sni, NextProtos: []string{"h2"}, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("sni %q: %v", sni, err)
		}
		if got := st.PeerCertificates[0].DNSNames[0]; got != want {
			t.Errorf("sni %q got the certificate of %s, want %s", sni, got, want)
		}
	}
}

// TestEchoALPN: a tcp listener accepts the protocol the client prefers.
func TestEchoALPN(t *testing.T) {
	p := newPKI(t)
	addr, _ := serve(t, Options{Config: static(&tls.Config{Certificates: []tls.Certificate{p.server}}), EchoALPN: true})
	for _, protos := range [][]string{{"h2", "http/1.1"}, {"http/1.1"}, {"postgresql"}, nil} {
		st, err := dial(addr, &tls.Config{RootCAs: p.ca.Pool(), ServerName: "api.example.com", NextProtos: protos})
		if err != nil {
			t.Fatalf("%v: %v", protos, err)
		}
		want := ""
		if len(protos) > 0 {
			want = protos[0]
		}
		if st.NegotiatedProtocol != want {
			t.Errorf("offered %v, negotiated %q", protos, st.NegotiatedProtocol)
		}
	}
}

// TestConfigSwap: the next handshake uses the configuration in force when
// it starts.
func TestConfigSwap(t *testing.T) {
	p := newPKI(t)
	ca2, _ := certgen.NewCA("ca2")
	l2, _ := ca2.Issue(certgen.Options{Names: []string{"api.example.com"}})
	var cur atomicConfig
	cur.Store(&tls.Config{Certificates: []tls.Certificate{p.server}, NextProtos: []string{"h2"}})
	addr, _ := serve(t, Options{Config: cur.Load, RequireALPN: "h2"})
	cli := &tls.Config{ServerName: "api.example.com", NextProtos: []string{"h2"}, RootCAs: p.ca.Pool()}
	if _, err := dial(addr, cli); err != nil {
		t.Fatal(err)
	}
	cur.Store(&tls.Config{Certificates: []tls.Certificate{l2.TLS()}, NextProtos: []string{"h2"}})
	if _, err := dial(addr, cli); err == nil {
		t.Fatal("the old CA still verifies the new certificate")
	}
	cli.RootCAs = ca2.Pool()
	if _, err := dial(addr, cli); err != nil {
		t.Fatal(err)
	}
}

type atomicConfig struct {
	mu  sync.Mutex
	cfg *tls.Config
}

func (a *atomicConfig) Store(c *tls.Config) { a.mu.Lock(); a.cfg = c; a.mu.Unlock() }
func (a *atomicConfig) Load() *tls.Config   { a.mu.Lock(); defer a.mu.Unlock(); return a.cfg }

// TestTimeoutAndGarbage: a client that sends nothing, half a ClientHello,
// or bytes that are not TLS is dropped within the timeout with the right
// result, and an honest client is served meanwhile.
func TestTimeoutAndGarbage(t *testing.T) {
	p := newPKI(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{p.server}, NextProtos: []string{"h2"}}
	addr, rs := serve(t, Options{Config: static(cfg), RequireALPN: "h2", HandshakeTimeout: 300 * time.Millisecond})
	hello := clientHello(t)
	tests := []struct {
		name string
		send []byte
		want Result
	}{
		{"silent", nil, ResultTimeout},
		{"half a ClientHello", hello[:len(hello)/2], ResultTimeout},
		{"h2c preface", []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), ResultNotTLS},
		{"HTTP/1.1", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ResultNotTLS},
		{"garbage inside the ClientHello", append(append([]byte{}, hello[:20]...), bytes.Repeat([]byte{0xff}, len(hello)-20)...), ResultError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			_, _ = c.Write(tt.send)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 1024)
			for {
				if _, err := c.Read(buf); err != nil {
					break
				}
			}
			if el := time.Since(start); el > 3*time.Second {
				t.Errorf("dropped after %v", el)
			}
			if got := rs.last(t); got != tt.want {
				t.Errorf("result %s, want %s", got, tt.want)
			}
			if _, err := dial(addr, &tls.Config{RootCAs: p.ca.Pool(), ServerName: "api.example.com", NextProtos: []string{"h2"}}); err != nil {
				t.Errorf("an honest client after it: %v", err)
			}
		})
	}
}

func clientHello(t *testing.T) []byte {
	t.Helper()
	hello, err := certgen.ClientHello(&tls.Config{ServerName: "api.example.com", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	return hello
}

// TestCloseEndsHandshakes: closing the listener ends the handshakes in
// flight at once (goleak checks the goroutines).
func TestCloseEndsHandshakes(t *testing.T) {
	p := newPKI(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rs := &results{}
	ln := New(Options{Config: static(&tls.Config{Certificates: []tls.Certificate{p.server}}), OnHandshake: rs.add, MaxHandshakes: 5}).Listen(inner)
	var conns []net.Conn
	for range 8 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// The three over the limit are closed at once.
	deadline := time.Now().Add(5 * time.Second)
	for {
		rs.mu.Lock()
		n := len(rs.got)
		rs.mu.Unlock()
		if n == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	rs.mu.Lock()
	for _, r := range rs.got {
		if r != ResultOverLimit {
			t.Errorf("result %s before close, want over_limit", r)
		}
	}
	rs.mu.Unlock()
	start := time.Now()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Close took %v", el)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

// TestHandshakeDirect: Handshake serves a caller that accepts itself (as
// SNI routing does), and its ctx deadline bounds it.
func TestHandshakeDirect(t *testing.T) {
	p := newPKI(t)
	term := New(Options{Config: static(&tls.Config{Certificates: []tls.Certificate{p.server}})})
	a, b := net.Pipe()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := term.Handshake(ctx, a)
	var he *Error
	if !errors.As(err, &he) || he.Result != ResultTimeout {
		t.Fatalf("err = %v, want a timeout", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	a, b = net.Pipe()
	done := make(chan error, 1)
	go func() {
		c := tls.Client(b, &tls.Config{RootCAs: roots, ServerName: "api.example.com"})
		done <- c.Handshake()
		c.Close()
	}()
	tc, err := term.Handshake(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	if tc.ConnectionState().ServerName != "api.example.com" {
		t.Errorf("server name %q", tc.ConnectionState().ServerName)
	}
	tc.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
