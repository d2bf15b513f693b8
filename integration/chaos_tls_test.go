package integration

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/internal/certgen"
)

// TestChaosClientTLSFloods: a flood of complete TLS handshakes, then a
// flood of half-finished ones (half a ClientHello, then silence), against
// a TLS grpc listener with a 1s handshake timeout. A well-behaved client
// on an established TLS connection keeps a bounded p99 during and after
// each flood, every half-finished handshake is dropped at the timeout and
// counted, and vigil's goroutines and heap come back to their baseline.
func TestChaosClientTLSFloods(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	cert, key, _ := pki.issue("vigil", certgen.Options{Names: []string{"vigil.test"}})
	c := newChaosClients(t, fmt.Sprintf("tls: {cert_file: %s, key_file: %s, handshake_timeout: 1s}\nmax_connections: 2000", cert, key))
	c.probe = &chaosLatencyProbe{c: tlsClient(t, c.api, &tls.Config{RootCAs: pki.pool(), ServerName: "vigil.test"})}
	baseline, before := c.settleBaseline(t)
	clientCfg := &tls.Config{RootCAs: pki.pool(), ServerName: "vigil.test", NextProtos: []string{"h2"}}

	// 1. Complete handshakes, as fast as 4 clients can make them, for 2s.
	var full atomic.Int64
	during, errs := c.probe.during(2*time.Second, func() {
		var wg sync.WaitGroup
		stop := time.Now().Add(2 * time.Second)
		for range 4 {
			wg.Go(func() {
				for time.Now().Before(stop) {
					conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", c.api, clientCfg)
					if err == nil {
						full.Add(1)
						conn.Close()
					}
				}
			})
		}
		wg.Wait()
	})
	t.Logf("handshake flood: %d complete handshakes in 2s", full.Load())
	requireLatency(t, "handshake flood", before, during, errs)
	after, errs := c.probe.measure(time.Second)
	requireLatency(t, "after the handshake flood", before, after, errs)

	// 2. 300 half-finished handshakes, held until vigil drops them.
	hello, err := certgen.ClientHello(clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	const half = 300
	var dropped atomic.Int64
	var slowest atomic.Int64
	during, errs = c.probe.during(time.Second, func() {
		var wg sync.WaitGroup
		for range half {
			conn, err := net.Dial("tcp", c.api)
			if err != nil {
				t.Errorf("dial: %v", err)
				continue
			}
			if _, err := conn.Write(hello[:len(hello)/2]); err != nil {
				t.Errorf("write: %v", err)
			}
			start := time.Now()
			wg.Go(func() {
				defer conn.Close()
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, 512)
				for {
					if _, err := conn.Read(buf); err != nil {
						break
					}
				}
				el := time.Since(start)
				if el < 8*time.Second {
					dropped.Add(1)
				}
				for {
					cur := slowest.Load()
					if int64(el) <= cur || slowest.CompareAndSwap(cur, int64(el)) {
						break
					}
				}
			})
		}
		wg.Wait()
	})
	if dropped.Load() != half {
		t.Errorf("%d of %d half-finished handshakes dropped by vigil (the slowest after %v)", dropped.Load(), half, time.Duration(slowest.Load()))
	}
	t.Logf("half-finished handshakes: %d dropped, the last after %v", dropped.Load(), time.Duration(slowest.Load()))
	requireLatency(t, "half-finished handshake flood", before, during, errs)
	after, errs = c.probe.measure(time.Second)
	requireLatency(t, "after the half-finished handshake flood", before, after, errs)

	eventually(t, 10*time.Second, func() bool {
		hs, err := chaosScrapeSeries(c.admin, "vigil_tls_handshakes_total")
		return err == nil && hs[`listener="api",result="timeout"`] >= half && hs[`listener="api",result="ok"`] >= float64(full.Load())
	}, "handshake results counted")
	chaosRequireBaseline(t, c.v, c.admin, baseline, "after the TLS floods")
}
