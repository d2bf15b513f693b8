package tlsterm

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/internal/certgen"
)

// FuzzClientHello feeds arbitrary first bytes (garbage before the
// ClientHello, a ClientHello with bytes changed inside it) to a server
// handshake: it must end, with a Result, within its timeout, and never
// panic; goleak checks that nothing is left running.
func FuzzClientHello(f *testing.F) {
	ca, err := certgen.NewCA("ca")
	if err != nil {
		f.Fatal(err)
	}
	leaf, _ := ca.Issue(certgen.Options{})
	term := New(Options{
		Config:           static(&tls.Config{Certificates: []tls.Certificate{leaf.TLS()}, NextProtos: []string{"h2"}}),
		RequireALPN:      "h2",
		HandshakeTimeout: 50 * time.Millisecond,
	})
	hello, err := certgen.ClientHello(&tls.Config{ServerName: "localhost", NextProtos: []string{"h2"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(hello)
	f.Add(append([]byte("garbage"), hello...))
	f.Add(hello[:5])
	mangled := append([]byte{}, hello...)
	mangled[9] ^= 0xff
	f.Add(mangled)
	f.Add([]byte{0x16, 0x03, 0x01, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, b := net.Pipe()
		defer b.Close()
		go func() {
			_ = b.SetDeadline(time.Now().Add(time.Second))
			_, _ = b.Write(data)
			buf := make([]byte, 4096)
			for {
				if _, err := b.Read(buf); err != nil {
					return
				}
			}
		}()
		start := time.Now()
		tc, err := term.Handshake(context.Background(), a)
		if err == nil {
			tc.Close()
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Fatalf("handshake took %v", el)
		}
	})
}
