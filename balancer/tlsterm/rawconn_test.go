package tlsterm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestRawIOOverTCP: a TLS connection the Terminator made from a real TCP
// connection (raw reads and writes underneath) carries 8 MiB each way at
// once (the socket fills, writes park until there is room), honours a
// read deadline, reports EOF and a closed connection as net.Conn does,
// and still gives its TCP socket through NetConn.
func TestRawIOOverTCP(t *testing.T) {
	p := newPKI(t)
	term := New(Options{Config: static(&tls.Config{Certificates: []tls.Certificate{p.server}}), HandshakeTimeout: 10 * time.Second})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	payload := make([]byte, 8<<20)
	rand.Read(payload)

	type result struct {
		got []byte
		err error
	}
	client := make(chan result, 1)
	go func() {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "api.example.com"})
		if err != nil {
			client <- result{err: err}
			return
		}
		defer c.Close()
		werr := make(chan error, 1)
		go func() { _, err := c.Write(payload); werr <- err }()
		got, err := io.ReadAll(c)
		if err == nil {
			err = <-werr
		}
		client <- result{got, err}
	}()

	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	tc, err := term.Handshake(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tc.NetConn().(interface{ NetConn() net.Conn }).NetConn().(*net.TCPConn); !ok {
		t.Errorf("NetConn under the TLS connection: %T, want a wrapper over *net.TCPConn", tc.NetConn())
	}
	werr := make(chan error, 1)
	go func() { _, err := tc.Write(payload); werr <- err }()
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(tc, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("the server read other bytes than the client wrote")
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}

	// Nothing more comes: the read deadline ends the read as a timeout.
	tc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = tc.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	tc.SetReadDeadline(time.Time{})

	if err := tc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	r := <-client
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !bytes.Equal(r.got, payload) {
		t.Fatal("the client read other bytes than the server wrote")
	}
	// The client closed: EOF, then reads on the closed connection fail
	// with net.ErrClosed.
	if _, err := tc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after the peer closed: %v, want EOF", err)
	}
	tc.Close()
	if _, err := tc.NetConn().Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v, want net.ErrClosed", err)
	}
}
