package integration

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/vigil-proxy/vigil/internal/certgen"
	"github.com/vigil-proxy/vigil/internal/loadgen"
)

// BenchmarkTLS (issue 14) puts the same load through vigil and through
// HAProxy (`bind ... ssl crt ... alpn h2`), both terminating TLS with the
// same certificate, in one run:
//
//   - grpc: unary UnaryCall with 1 KiB each way over long-lived TLS
//     connections (concurrency 1 on one connection, 64 on four), to two
//     demo-backend processes in h2c behind the proxy; direct is the client
//     balancing over the backends itself in plaintext, so the ratio to
//     direct prices TLS and the proxy hop together. Metrics as
//     BenchmarkGRPCLoad's (rps, p50-µs, p99-µs, proxy-cpu-µs/rpc).
//   - handshake: full handshakes (TLS 1.3, X25519, no resumption) by 4
//     client goroutines, each connection closed once its handshake is
//     done, with an ECDSA P-256 and an RSA 2048 certificate: handshakes/s
//     and proxy-cpu-µs/handshake.
//   - bulk: 256 MiB uploads and downloads through a tcp listener that
//     terminates TLS (the client speaks TLS, the sink/source plaintext):
//     MB/s and proxy-cpu-µs/MB; direct is plaintext to the sink.
//
// Targets: CPU per RPC no more than HAProxy's, CPU per handshake within
// 1.5x HAProxy's (OpenSSL), bulk CPU per MB no more than HAProxy's.
//
//	VIGIL_INTEGRATION_NORACE=1 go test -run '^$' -bench TLS -benchtime 1x ./integration/
func BenchmarkTLS(b *testing.B) {
	benchSetup(b, "this process (load generator and TLS clients), demo-backend or sink processes, the proxy being measured (the others idle)")
	pki := newTestPKI(b)
	type keyed struct {
		name      string
		cert, key string
		pem       string // cert and key in one file, for HAProxy
	}
	var keys []keyed
	for _, k := range []struct {
		name string
		kt   certgen.KeyType
	}{{"ecdsa-p256", certgen.ECDSAP256}, {"rsa-2048", certgen.RSA2048}} {
		cert, key, leaf := pki.issue(k.name, certgen.Options{Names: []string{"bench.test", "127.0.0.1"}, Key: k.kt})
		pem := filepath.Join(pki.dir, k.name+".pem")
		if err := os.WriteFile(pem, append(append([]byte{}, leaf.CertPEM...), leaf.KeyPEM...), 0o600); err != nil {
			b.Fatal(err)
		}
		keys = append(keys, keyed{k.name, cert, key, pem})
	}
	clientTLS := func(protos ...string) *tls.Config {
		return &tls.Config{RootCAs: pki.pool(), ServerName: "bench.test", NextProtos: protos}
	}

	b.Run("grpc", func(b *testing.B) {
		backends := []*demoBackend{startDemoBackend(b, "be1"), startDemoBackend(b, "be2")}
		upstreams := []string{backends[0].addr, backends[1].addr}
		k := keys[0]
		v := startVigil(b, withBenchPprof(renderBenchConfig(
			[]benchListener{{name: "api", protocol: "grpc", cluster: "load", extra: fmt.Sprintf("tls: {cert_file: %s, key_file: %s}", k.cert, k.key)}},
			[]benchCluster{{name: "load", endpoints: upstreams, health: "mode: check\ninterval: 5s\ntimeout: 1s"}},
		)))
		v.waitRecords(15*time.Second, 0, match("endpoint admitted"), 2, "both backends admitted")
		targets := []proxyUnderTest{
			{name: "direct", addr: "static:///backends"},
			vigilPprofProxy(b, v, "api"),
			startExternalProxy(b, "haproxy", haproxyTLSGRPC(k.pem, upstreams)),
		}
		tlsDial := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(clientTLS()))}
		for _, concurrency := range []int{1, 64} {
			b.Run(fmt.Sprintf("c%d", concurrency), func(b *testing.B) {
				for _, target := range targets {
					b.Run(target.name, func(b *testing.B) {
						opts := tlsDial
						if target.name == "direct" {
							opts = []grpc.DialOption{
								grpc.WithTransportCredentials(insecure.NewCredentials()),
								grpc.WithResolvers(staticResolver{scheme: "static", addrs: upstreams}),
								grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
							}
						}
						tlsLoad(b, target, concurrency, opts)
					})
				}
			})
		}
	})

	// upstream: the client speaks h2c to the proxy, the proxy TLS to the
	// backends (a cluster with tls; HAProxy's `server ... ssl alpn h2`);
	// direct is the client speaking TLS to the backends itself.
	b.Run("upstream", func(b *testing.B) {
		cert, key, _ := pki.issue("backend", certgen.Options{Names: []string{"127.0.0.1"}, Key: certgen.ECDSAP256})
		backends := []*demoBackend{startDemoBackend(b, "be1", "-tls-cert", cert, "-tls-key", key),
			startDemoBackend(b, "be2", "-tls-cert", cert, "-tls-key", key)}
		upstreams := []string{backends[0].addr, backends[1].addr}
		v := startVigil(b, renderBenchConfig(
			[]benchListener{{name: "api", protocol: "grpc", cluster: "load"}},
			[]benchCluster{{name: "load", endpoints: upstreams, health: "mode: check\ninterval: 5s\ntimeout: 1s",
				extra: "tls: {ca_file: " + pki.caFile + "}"}},
		))
		v.waitRecords(15*time.Second, 0, match("endpoint admitted"), 2, "both backends admitted")
		targets := []proxyUnderTest{
			{name: "direct", addr: "static:///backends"},
			vigilProxy(v, "api"),
			startExternalProxy(b, "haproxy", haproxyGRPCToTLS(pki.caFile, upstreams)),
		}
		for _, concurrency := range []int{1, 64} {
			b.Run(fmt.Sprintf("c%d", concurrency), func(b *testing.B) {
				for _, target := range targets {
					b.Run(target.name, func(b *testing.B) {
						opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
						if target.name == "direct" {
							opts = []grpc.DialOption{
								grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pki.pool(), ServerName: "127.0.0.1"})),
								grpc.WithResolvers(staticResolver{scheme: "static", addrs: upstreams}),
								grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
							}
						}
						tlsLoad(b, target, concurrency, opts)
					})
				}
			})
		}
	})

	b.Run("handshake", func(b *testing.B) {
		backend := startDemoBackend(b, "be")
		for _, k := range keys {
			b.Run(k.name, func(b *testing.B) {
				v := startVigil(b, renderBenchConfig(
					[]benchListener{{name: "api", protocol: "grpc", cluster: "c", extra: fmt.Sprintf("tls: {cert_file: %s, key_file: %s}\nmax_connections: 0", k.cert, k.key)}},
					[]benchCluster{{name: "c", endpoints: []string{backend.addr}, health: "mode: tcp\ninterval: 5s\ntimeout: 1s"}},
				))
				for _, target := range []proxyUnderTest{vigilProxy(v, "api"), startExternalProxy(b, "haproxy", haproxyTLSGRPC(k.pem, []string{backend.addr}))} {
					b.Run(target.name, func(b *testing.B) {
						if target.skip != "" {
							b.Skip(target.skip)
						}
						reportLoad(b)
						handshakes(b, target, clientTLS("h2"), benchDuration(b, "VIGIL_BENCH_TLS_DURATION", 3*time.Second))
					})
				}
			})
		}
	})

	b.Run("bulk", func(b *testing.B) {
		helper := startHelper(b, "tcp-backend")
		sink := helper.line(b)
		k := keys[0]
		v := startVigil(b, renderBenchConfig(
			[]benchListener{{name: "bulk", protocol: "tcp", cluster: "bulk", extra: fmt.Sprintf("tls: {cert_file: %s, key_file: %s}", k.cert, k.key)}},
			[]benchCluster{{name: "bulk", endpoints: []string{sink}, health: "mode: tcp\ninterval: 5s\ntimeout: 1s"}},
		))
		v.wait(15*time.Second, 0, match("endpoint admitted", "endpoint", sink), "sink admitted")
		size := int64(benchInt(b, "VIGIL_BENCH_TLS_MIB", 256)) << 20
		targets := []proxyUnderTest{{name: "direct", addr: sink}, vigilProxy(v, "bulk"), startExternalProxy(b, "haproxy", haproxyTLSTCP(k.pem, sink))}
		for _, direction := range []string{"upload", "download"} {
			b.Run(direction, func(b *testing.B) {
				for _, target := range targets {
					b.Run(target.name, func(b *testing.B) {
						if target.skip != "" {
							b.Skip(target.skip)
						}
						reportLoad(b)
						dial := func() (net.Conn, error) { return tls.Dial("tcp", target.addr, clientTLS()) }
						if target.name == "direct" {
							dial = func() (net.Conn, error) { return net.Dial("tcp", target.addr) }
						}
						transfer := uploadOver
						if direction == "download" {
							transfer = downloadOver
						}
						if err := transfer(dial, 32<<20); err != nil {
							b.Fatalf("warm-up through %s: %v", target.name, err)
						}
						var before time.Duration
						if target.cpu != nil {
							before = target.cpu(b)
						}
						start := time.Now()
						for range b.N {
							if err := transfer(dial, size); err != nil {
								b.Fatalf("%s through %s: %v", direction, target.name, err)
							}
						}
						mb := float64(size) * float64(b.N) / 1e6
						b.ReportMetric(mb/time.Since(start).Seconds(), "MB/s")
						if target.cpu != nil {
							b.ReportMetric(float64((target.cpu(b)-before).Microseconds())/mb, "proxy-cpu-µs/MB")
						}
					})
				}
			})
		}
	})
}

// tlsLoad runs BenchmarkTLS's gRPC load (1 KiB each way, concurrency
// over min(concurrency, 4) connections) through target with opts.
func tlsLoad(b *testing.B, target proxyUnderTest, concurrency int, opts []grpc.DialOption) {
	if target.skip != "" {
		b.Skip(target.skip)
	}
	reportLoad(b)
	cfg := loadgen.Config{
		Target: target.addr, Concurrency: concurrency, Conns: min(concurrency, 4),
		Duration:    benchDuration(b, "VIGIL_BENCH_GRPC_DURATION", 5*time.Second),
		RequestSize: 1024, ResponseSize: 1024, Warmup: 200,
		DialOptions: opts,
	}
	var before time.Duration
	var profiled chan struct{}
	cfg.OnMeasureStart = func() {
		if target.cpu != nil {
			before = target.cpu(b)
		}
		if target.profile != nil {
			profiled = make(chan struct{})
			go func() {
				defer close(profiled)
				target.profile(b, cfg.Duration-time.Second)
			}()
		}
	}
	r, err := loadgen.Run(context.Background(), cfg)
	if profiled != nil {
		<-profiled
	}
	if err != nil {
		b.Fatal(err)
	}
	if r.Requests == 0 {
		b.Fatalf("no RPC succeeded: %v (first error %v)", r, r.FirstErr)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(r.QPS, "rps")
	b.ReportMetric(float64(r.P50.Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(r.P99.Nanoseconds())/1e3, "p99-µs")
	b.ReportMetric(float64(r.Errors), "errors")
	if target.cpu != nil {
		b.ReportMetric(float64((target.cpu(b)-before).Nanoseconds())/1e3/float64(r.Requests), "proxy-cpu-µs/rpc")
	}
	if r.Errors > 0 {
		b.Errorf("%d RPCs failed through %s; first: %v", r.Errors, target.name, r.FirstErr)
	}
}

// haproxyGRPCToTLS is haproxyGRPC with TLS to the servers: verified
// against caFile, ALPN h2.
func haproxyGRPCToTLS(caFile string, upstreams []string) func(tb testing.TB, dir, listen string) []string {
	return func(tb testing.TB, dir, listen string) []string {
		var servers strings.Builder
		for i, u := range upstreams {
			fmt.Fprintf(&servers, "    server s%d %s ssl verify required ca-file %s alpn h2\n", i, u, caFile)
		}
		return writeConfig(tb, dir, "haproxy.cfg", `global
    maxconn 8000
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
frontend bench
    bind `+listen+` proto h2
    default_backend bench
backend bench
    balance roundrobin
`+servers.String(), "-db", "-f")
	}
}

// handshakes makes full TLS handshakes with target from 4 goroutines for
// d and reports their rate and the proxy's CPU per handshake.
func handshakes(b *testing.B, target proxyUnderTest, cfg *tls.Config, d time.Duration) {
	var n, failed atomic.Int64
	var firstErr atomic.Value
	run := func(d time.Duration, count bool) {
		var wg sync.WaitGroup
		stop := time.Now().Add(d)
		for range 4 {
			wg.Go(func() {
				dialer := &net.Dialer{Timeout: 5 * time.Second}
				for time.Now().Before(stop) {
					c, err := tls.DialWithDialer(dialer, "tcp", target.addr, cfg)
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
						continue
					}
					c.Close()
					if count {
						n.Add(1)
					}
				}
			})
		}
		wg.Wait()
	}
	run(300*time.Millisecond, false) // warm-up
	failed.Store(0)
	before := target.cpu(b)
	start := time.Now()
	run(d, true)
	elapsed := time.Since(start)
	used := target.cpu(b) - before
	if n.Load() == 0 {
		b.Fatalf("no handshake succeeded: %v", firstErr.Load())
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(n.Load())/elapsed.Seconds(), "handshakes/s")
	b.ReportMetric(float64(used.Microseconds())/float64(n.Load()), "proxy-cpu-µs/handshake")
	b.ReportMetric(float64(failed.Load()), "errors")
	if failed.Load() > 0 {
		b.Errorf("%d handshakes failed; first: %v", failed.Load(), firstErr.Load())
	}
}

// haproxyTLSGRPC is haproxyGRPC with TLS terminated on the frontend with
// pem (certificate and key), ALPN h2.
func haproxyTLSGRPC(pem string, upstreams []string) func(tb testing.TB, dir, listen string) []string {
	return func(tb testing.TB, dir, listen string) []string {
		var servers strings.Builder
		for i, u := range upstreams {
			fmt.Fprintf(&servers, "    server s%d %s proto h2\n", i, u)
		}
		return writeConfig(tb, dir, "haproxy.cfg", `global
    maxconn 8000
    tune.ssl.default-dh-param 2048
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
frontend bench
    bind `+listen+` ssl crt `+pem+` alpn h2
    default_backend bench
backend bench
    balance roundrobin
`+servers.String(), "-db", "-f")
	}
}

// haproxyTLSTCP is haproxyTCP with TLS terminated on the frontend.
func haproxyTLSTCP(pem, upstream string) func(tb testing.TB, dir, listen string) []string {
	return func(tb testing.TB, dir, listen string) []string {
		return writeConfig(tb, dir, "haproxy.cfg", `global
    maxconn 8000
defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s
frontend bench
    bind `+listen+` ssl crt `+pem+`
    default_backend bench
backend bench
    server upstream `+upstream+`
`, "-db", "-f")
	}
}

// withBenchPprof gives a benchmark's vigil an admin listener when
// VIGIL_BENCH_PPROF names a directory, so that vigilPprofProxy can take a
// CPU profile of it under load.
func withBenchPprof(cfg string) string {
	if os.Getenv("VIGIL_BENCH_PPROF") == "" {
		return cfg
	}
	return strings.Replace(cfg, "admin:\n  address: \"\"\n", "admin:\n  address: 127.0.0.1:0\n", 1)
}

// vigilPprofProxy is vigilProxy, which with VIGIL_BENCH_PPROF also writes
// a CPU profile of vigil over the measurement to that directory, named
// after the benchmark:
//
//	VIGIL_BENCH_PPROF=/tmp/prof VIGIL_INTEGRATION_NORACE=1 go test -run '^$' -bench 'TLS/grpc/c1/vigil' -benchtime 1x ./integration/
//	go tool pprof -top bin/vigil /tmp/prof/BenchmarkTLS_grpc_c1_vigil.pprof
func vigilPprofProxy(b *testing.B, v *vigilProc, listener string) proxyUnderTest {
	p := vigilProxy(v, listener)
	dir := os.Getenv("VIGIL_BENCH_PPROF")
	if dir == "" {
		return p
	}
	base := "http://" + v.adminAddr()
	p.profile = func(tb testing.TB, d time.Duration) {
		resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, max(int(d.Seconds()), 1)))
		if err != nil {
			tb.Errorf("pprof: %v", err)
			return
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			tb.Errorf("pprof: %d, %v", resp.StatusCode, err)
			return
		}
		name := filepath.Join(dir, strings.ReplaceAll(tb.Name(), "/", "_")+".pprof")
		if err := os.WriteFile(name, data, 0o644); err != nil {
			tb.Errorf("pprof: %v", err)
		}
	}
	return p
}
