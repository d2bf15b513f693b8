package integration

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/internal/certgen"
)

// BenchmarkSNIPassthrough (issue 15) routes TLS connections by SNI without
// terminating them, through vigil (a tcp listener with sni routes) and
// HAProxy (mode tcp, req.ssl_sni after tcp-request inspect-delay), in the
// same run: two Go crypto/tls backends in this process, one per name.
// "conn" is one connection per op (the TLS handshake with the backend
// through the proxy, 1 KiB back, close): proxy CPU per connection; "bulk"
// downloads VIGIL_BENCH_SNI_MIB MiB (default 512) over one connection:
// proxy CPU per MB. The proxies' CPU is theirs alone (/proc, 10 ms
// resolution); the TLS work is the client's and the backend's.
// "vigil-plain" is the same connections through a tcp listener without
// routes, all to one backend: what reading the hello adds.
//
//	VIGIL_INTEGRATION_NORACE=1 go test -run '^$' -bench SNIPassthrough -benchtime 2000x ./integration/
func BenchmarkSNIPassthrough(b *testing.B) {
	benchSetup(b, "this process (client and the two TLS backends), the proxy being measured (the other idle)")
	ca, err := certgen.NewCA("bench CA")
	if err != nil {
		b.Fatal(err)
	}
	leafA, err := ca.Issue(certgen.Options{Names: []string{"a.example.com"}})
	if err != nil {
		b.Fatal(err)
	}
	leafB, err := ca.Issue(certgen.Options{Names: []string{"*.b.example.com"}})
	if err != nil {
		b.Fatal(err)
	}
	a, bb := startTLSSource(b, leafA), startTLSSource(b, leafB)
	health := "mode: tcp\ninterval: 5s\ntimeout: 1s"
	v := startVigil(b, renderBenchConfig(
		[]benchListener{{name: "sni", protocol: "tcp", cluster: "ca",
			extra: "routes: [{sni: a.example.com, cluster: ca}, {sni: \"*.b.example.com\", cluster: cb}]"},
			{name: "plain", protocol: "tcp", cluster: "ca"}},
		[]benchCluster{{name: "ca", endpoints: []string{a}, health: health}, {name: "cb", endpoints: []string{bb}, health: health}},
	))
	v.wait(15*time.Second, 0, match("endpoint admitted", "endpoint", bb), "backend admitted")
	// vigil-plain is a tcp listener without routes (every connection to
	// a's backend): what routing by SNI adds to a connection.
	plain := vigilProxy(v, "plain")
	plain.name = "vigil-plain"
	targets := []proxyUnderTest{vigilProxy(v, "sni"), plain, startExternalProxy(b, "haproxy", haproxySNI(a, bb))}
	mib := int64(benchInt(b, "VIGIL_BENCH_SNI_MIB", 512))
	pool := ca.Pool()
	dial := func(addr, sni string, size int64) error {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer raw.Close()
		_ = raw.SetDeadline(time.Now().Add(60 * time.Second))
		c := tls.Client(raw, &tls.Config{ServerName: sni, RootCAs: pool})
		var req [8]byte
		binary.BigEndian.PutUint64(req[:], uint64(size))
		if _, err := c.Write(req[:]); err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			return err
		}
		if n != size {
			return fmt.Errorf("%d bytes of %d", n, size)
		}
		if c.ConnectionState().PeerCertificates[0].DNSNames[0] != map[string]string{"a.example.com": "a.example.com", "x.b.example.com": "*.b.example.com"}[sni] {
			return fmt.Errorf("%s reached the wrong backend", sni)
		}
		return nil
	}
	for _, kind := range []string{"conn", "bulk"} {
		b.Run(kind, func(b *testing.B) {
			for _, target := range targets {
				b.Run(target.name, func(b *testing.B) {
					if target.skip != "" {
						b.Skip(target.skip)
					}
					reportLoad(b)
					for _, sni := range []string{"a.example.com", "x.b.example.com"} {
						if target.name == "vigil-plain" {
							sni = "a.example.com"
						}
						if err := dial(target.addr, sni, 1024); err != nil {
							b.Fatalf("warm-up through %s: %v", target.name, err)
						}
					}
					before := target.cpu(b)
					start := time.Now()
					var mb float64
					for i := range b.N {
						sni := "a.example.com"
						if i%2 == 1 && target.name != "vigil-plain" {
							sni = "x.b.example.com"
						}
						size := int64(1024)
						if kind == "bulk" {
							size = mib << 20
						}
						if err := dial(target.addr, sni, size); err != nil {
							b.Fatalf("through %s: %v", target.name, err)
						}
						mb += float64(size) / 1e6
					}
					elapsed := time.Since(start)
					cpu := target.cpu(b) - before
					if kind == "conn" {
						b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "proxy-cpu-µs/conn")
						b.ReportMetric(float64(b.N)/elapsed.Seconds(), "conn/s")
					} else {
						b.ReportMetric(float64(cpu.Microseconds())/mb, "proxy-cpu-µs/MB")
						b.ReportMetric(mb/elapsed.Seconds(), "MB/s")
					}
				})
			}
		})
	}
}

// startTLSSource is a TLS server that reads an 8-byte size from each
// connection, writes that many bytes and closes.
func startTLSSource(tb testing.TB, leaf *certgen.Leaf) string {
	tb.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{leaf.TLS()}})
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	block := make([]byte, 64<<10)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(60 * time.Second))
				var req [8]byte
				if _, err := io.ReadFull(c, req[:]); err != nil {
					return
				}
				for left := int64(binary.BigEndian.Uint64(req[:])); left > 0; {
					n, err := c.Write(block[:min(left, int64(len(block)))])
					if err != nil {
						return
					}
					left -= int64(n)
				}
			})
		}
	})
	return ln.Addr().String()
}

// haproxySNI is HAProxy in mode tcp routing by req.ssl_sni, as its
// documentation shows for TLS passthrough: wait for the ClientHello (up to
// 5 s), then pick the backend by its server name.
func haproxySNI(a, b string) func(tb testing.TB, dir, listen string) []string {
	return func(tb testing.TB, dir, listen string) []string {
		return writeConfig(tb, dir, "haproxy.cfg", `global
    maxconn 8000
defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s
frontend sni
    bind `+listen+`
    tcp-request inspect-delay 5s
    tcp-request content accept if { req.ssl_hello_type 1 }
    use_backend a if { req.ssl_sni -i a.example.com }
    use_backend b if { req.ssl_sni -i -m end .b.example.com }
    default_backend a
backend a
    server a `+a+`
backend b
    server b `+b+`
`, "-db", "-f")
	}
}
