package probeconn

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-proxy/vigil/internal/certgen"
)

// TestTLSServerInPlaintext: a TLS server reached in plaintext reads the
// client's preface as a bad record and closes without a byte; the call
// fails UNAVAILABLE with ErrNoPreface, which the checker's hint names.
func TestTLSServerInPlaintext(t *testing.T) {
	ca, err := certgen.NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(certgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{leaf.TLS()}}
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
				_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
				_ = tls.Server(nc, cfg).Handshake()
				_ = nc.Close()
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	c := newConn(t, ln.Addr().String(), Options{})
	_, err = check(t.Context(), c, "", 5*time.Second)
	if status.Code(err) != codes.Unavailable || !errors.Is(err, ErrNoPreface) {
		t.Fatalf("Check on a TLS server in plaintext = %v, want UNAVAILABLE wrapping ErrNoPreface", err)
	}
}
