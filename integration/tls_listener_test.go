package integration

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/peer"

	"github.com/vigil-proxy/vigil/internal/certgen"
)

func tlsListenerConfig(backends []string, api, raw string) string {
	return yamlConfig{
		Admin: true,
		Listeners: []yamlListener{
			{Name: "api", Cluster: "c", Extra: api},
			{Name: "raw", Protocol: "tcp", Cluster: "c", Extra: raw},
		},
		// Lenient checks: these tests are about clients, and a loaded
		// machine must not evict the backends under them.
		Clusters: []yamlCluster{{Name: "c", Endpoints: backends, Panic: 50,
			Health: "mode: check\ninterval: 1s\ntimeout: 1s\nunhealthy_threshold: 5\nhealthy_threshold: 1"}},
	}.String()
}

// TestTLSListeners: a grpc listener speaks HTTP/2 over TLS (grpc-go and
// grpc_health_probe against vigil's own health), a tcp listener
// terminates TLS and forwards plaintext; a plaintext client is refused;
// the metrics count the handshakes and tell the certificate's expiry.
func TestTLSListeners(t *testing.T) {
	pki := newTestPKI(t)
	cert, key, _ := pki.issue("vigil", certgen.Options{Names: []string{"vigil.test", "127.0.0.1"}})
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	tlsYAML := fmt.Sprintf("tls: {cert_file: %s, key_file: %s}", cert, key)
	v := startVigil(t, tlsListenerConfig([]string{b1.addr, b2.addr}, tlsYAML, tlsYAML))
	v.wait(10*time.Second, 0, match("ready: first round of health checks done"), "ready")
	api, raw := v.listener("api"), v.listener("raw")
	clientTLS := &tls.Config{RootCAs: pki.pool(), ServerName: "vigil.test"}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for name, addr := range map[string]string{"grpc": api, "tcp": raw} {
		c := tlsClient(t, addr, clientTLS.Clone())
		seen := map[string]bool{}
		for range 20 {
			var p peer.Peer
			resp, err := c.tc.UnaryCall(ctx, &testpb.SimpleRequest{FillServerId: true}, grpc.Peer(&p))
			if err != nil {
				t.Fatalf("%s listener over TLS: %v", name, err)
			}
			seen[resp.ServerId] = true
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); !ok || ti.State.NegotiatedProtocol != "h2" {
				t.Fatalf("%s listener: peer %+v, want TLS with h2", name, p.AuthInfo)
			}
		}
		if name == "grpc" && len(seen) != 2 {
			t.Errorf("grpc over TLS reached %v, want both backends (per-RPC balancing)", seen)
		}
		// vigil's own health over TLS.
		hc := healthpb.NewHealthClient(c.conn)
		if r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); name == "grpc" && (err != nil || r.Status != healthpb.HealthCheckResponse_SERVING) {
			t.Errorf("own health over TLS: %v %v", r, err)
		}
	}

	// A plaintext (h2c) client is refused by the TLS listener.
	plain, err := grpc.NewClient("passthrough:///"+api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	_, err = testpb.NewTestServiceClient(plain).UnaryCall(short, &testpb.SimpleRequest{})
	cancelShort()
	if err == nil {
		t.Fatal("a plaintext client was served by a TLS listener")
	}

	// A client that does not trust vigil's certificate aborts.
	if _, err := tls.Dial("tcp", api, &tls.Config{ServerName: "vigil.test", NextProtos: []string{"h2"}}); err == nil {
		t.Fatal("a client without the CA trusted vigil")
	}

	base := "http://" + v.adminAddr()
	eventually(t, 10*time.Second, func() bool {
		hs, err := chaosScrapeSeries(base, "vigil_tls_handshakes_total")
		return err == nil && hs[`listener="api",result="ok"`] >= 1 && hs[`listener="raw",result="ok"`] >= 1 &&
			hs[`listener="api",result="not_tls"`] >= 1 && hs[`listener="api",result="error"`] >= 1
	}, "handshake counts")
	exp, err := chaosScrapeSeries(base, "vigil_tls_certificate_expiry_seconds")
	if err != nil {
		t.Fatal(err)
	}
	if s := exp[fmt.Sprintf(`cluster="",file=%q,listener="api"`, cert)]; s < 23*3600 || s > 24*3600 {
		t.Errorf("expiry of %s: %v s (%v), want about a day", cert, s, exp)
	}

	// grpc_health_probe with -tls flags, against the proxy's own health.
	probe := grpcHealthProbe(t)
	code, out := runProbe(t, probe, "-addr", api, "-tls", "-tls-ca-cert", pki.caFile, "-tls-server-name", "vigil.test")
	if code != 0 || !strings.Contains(out, "SERVING") {
		t.Errorf("grpc_health_probe -tls: exit %d: %s", code, out)
	}
	code, out = runProbe(t, probe, "-addr", api, "-tls", "-tls-ca-cert", pki.caFile, "-tls-server-name", "vigil.test", "-service", "c")
	if code != 0 || !strings.Contains(out, "SERVING") {
		t.Errorf("grpc_health_probe -tls -service c: exit %d: %s", code, out)
	}
	code, out = runProbe(t, probe, "-addr", api, "-tls", "-tls-ca-cert", pki.caFile, "-tls-server-name", "wrong.test")
	if code == 0 {
		t.Errorf("grpc_health_probe with a wrong server name succeeded: %s", out)
	}
	code, _ = runProbe(t, probe, "-addr", api)
	if code == 0 {
		t.Errorf("grpc_health_probe without -tls succeeded against a TLS listener")
	}
}

// TestTLSMutual: with client_ca_file, a client certificate signed by that
// CA is accepted; none, or one of another CA, is refused.
func TestTLSMutual(t *testing.T) {
	pki := newTestPKI(t)
	cert, key, _ := pki.issue("vigil", certgen.Options{Names: []string{"vigil.test"}})
	_, _, good := pki.issue("client", certgen.Options{Names: []string{"client"}})
	other, _ := certgen.NewCA("someone else")
	stranger, _ := other.Issue(certgen.Options{Names: []string{"client"}})
	b := startBackend(t, "b")
	tlsYAML := fmt.Sprintf("tls: {cert_file: %s, key_file: %s, client_ca_file: %s}", cert, key, pki.caFile)
	v := startVigil(t, tlsListenerConfig([]string{b.addr}, tlsYAML, tlsYAML))
	v.wait(10*time.Second, 0, match("ready: first round of health checks done"), "ready")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, l := range []string{"api", "raw"} {
		addr := v.listener(l)
		goodCert := good.TLS()
		ok := tlsClient(t, addr, &tls.Config{RootCAs: pki.pool(), ServerName: "vigil.test", Certificates: []tls.Certificate{goodCert}})
		if _, err := ok.call(ctx); err != nil {
			t.Errorf("%s: a client with a good certificate: %v", l, err)
		}
		strangerCert := stranger.TLS()
		for what, cfg := range map[string]*tls.Config{
			"no certificate": {RootCAs: pki.pool(), ServerName: "vigil.test"},
			"another CA's": {RootCAs: pki.pool(), ServerName: "vigil.test",
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &strangerCert, nil }},
		} {
			c := tlsClient(t, addr, cfg)
			short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
			_, err := c.call(short)
			cancelShort()
			if err == nil {
				t.Errorf("%s: a client with %s certificate was served", l, what)
			}
		}
	}
	// grpc_health_probe presenting the client certificate.
	probe := grpcHealthProbe(t)
	cf, kf, _ := pki.issue("probe", certgen.Options{Names: []string{"probe"}})
	code, out := runProbe(t, probe, "-addr", v.listener("api"), "-tls", "-tls-ca-cert", pki.caFile, "-tls-server-name", "vigil.test",
		"-tls-client-cert", cf, "-tls-client-key", kf)
	if code != 0 {
		t.Errorf("grpc_health_probe with a client certificate: exit %d: %s", code, out)
	}
	if code, out := runProbe(t, probe, "-addr", v.listener("api"), "-tls", "-tls-ca-cert", pki.caFile, "-tls-server-name", "vigil.test"); code == 0 {
		t.Errorf("grpc_health_probe without a client certificate succeeded: %s", out)
	}
	base := "http://" + v.adminAddr()
	eventually(t, 10*time.Second, func() bool {
		hs, err := chaosScrapeSeries(base, "vigil_tls_handshakes_total")
		return err == nil && hs[`listener="api",result="client_cert"`] >= 2 && hs[`listener="raw",result="client_cert"`] >= 2
	}, "client_cert refusals counted")
}

// TestTLSSNIAndVersions: the client's server name picks the certificate
// (wildcards too, the first for anything else), and a TLS 1.3-only
// listener refuses a TLS 1.2-only client cleanly.
func TestTLSSNIAndVersions(t *testing.T) {
	pki := newTestPKI(t)
	defCert, defKey, def := pki.issue("default", certgen.Options{Names: []string{"default.test"}})
	apiCert, apiKey, apiLeaf := pki.issue("api", certgen.Options{Names: []string{"api.test"}})
	wCert, wKey, wLeaf := pki.issue("wild", certgen.Options{Names: []string{"*.apps.test"}})
	b := startBackend(t, "b")
	sni := fmt.Sprintf("tls: {certificates: [{cert_file: %s, key_file: %s}, {cert_file: %s, key_file: %s}, {cert_file: %s, key_file: %s}], min_version: \"1.3\"}",
		defCert, defKey, apiCert, apiKey, wCert, wKey)
	v := startVigil(t, tlsListenerConfig([]string{b.addr}, sni, sni))
	for _, l := range []string{"api", "raw"} {
		addr := v.listener(l)
		for name, want := range map[string]*certgen.Leaf{"api.test": apiLeaf, "x.apps.test": wLeaf, "unknown.test": def, "": def} {
			c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true, NextProtos: []string{"h2"}})
			if err != nil {
				t.Fatalf("%s: sni %q: %v", l, name, err)
			}
			got := c.ConnectionState().PeerCertificates[0]
			c.Close()
			if got.SerialNumber.Cmp(want.Cert.SerialNumber) != 0 {
				t.Errorf("%s: sni %q got the certificate for %v", l, name, got.DNSNames)
			}
		}
		_, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "api.test", RootCAs: pki.pool(), MaxVersion: tls.VersionTLS12, NextProtos: []string{"h2"}})
		if err == nil || !strings.Contains(err.Error(), "protocol version not supported") {
			t.Errorf("%s: a TLS 1.2 client against min_version 1.3: %v", l, err)
		}
	}
	// A grpc client without ALPN h2 (HTTP/1.1 over TLS) is refused by the
	// grpc listener, accepted by the tcp one.
	_, err := tls.Dial("tcp", v.listener("api"), &tls.Config{ServerName: "api.test", RootCAs: pki.pool(), NextProtos: []string{"http/1.1"}})
	if err == nil || !strings.Contains(err.Error(), "no application protocol") {
		t.Errorf("grpc listener, client offering http/1.1 only: %v", err)
	}
	if c, err := tls.Dial("tcp", v.listener("raw"), &tls.Config{ServerName: "api.test", RootCAs: pki.pool(), NextProtos: []string{"http/1.1"}}); err != nil {
		t.Errorf("tcp listener, client offering http/1.1: %v", err)
	} else {
		c.Close()
	}
	base := "http://" + v.adminAddr()
	eventually(t, 10*time.Second, func() bool {
		hs, err := chaosScrapeSeries(base, "vigil_tls_handshakes_total")
		return err == nil && hs[`listener="api",result="version"`] >= 1 && hs[`listener="api",result="alpn"`] >= 1
	}, "version and alpn refusals counted")
}

// TestTLSRotationUnderLoad: under steady load on long-lived and new
// connections, the certificate is rotated through a Kubernetes ..data
// symlink swap and written in place: no RPC fails, every connection made
// after a rotation sees the new certificate, and a broken rotation is
// rejected (`tls reload rejected`) while the previous one keeps serving.
func TestTLSRotationUnderLoad(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	// The layout of a Secret volume: tls.crt -> ..data/tls.crt.
	writeVersion := func(version string, leaf *certgen.Leaf) {
		if err := os.Mkdir(filepath.Join(dir, version), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, _, err := leaf.Write(filepath.Join(dir, version), "tls"); err != nil {
			t.Fatal(err)
		}
	}
	newLeaf := func() *certgen.Leaf {
		l, err := pki.ca.Issue(certgen.Options{Names: []string{"vigil.test"}})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	first := newLeaf()
	writeVersion("..v1", first)
	mustSymlink(t, "..v1", filepath.Join(dir, "..data"))
	mustSymlink(t, "..data/tls.crt", filepath.Join(dir, "tls.crt"))
	mustSymlink(t, "..data/tls.key", filepath.Join(dir, "tls.key"))
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	tlsYAML := fmt.Sprintf("tls: {cert_file: %s, key_file: %s}", filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	v := startVigil(t, tlsListenerConfig([]string{b1.addr, b2.addr}, tlsYAML, tlsYAML))
	v.wait(10*time.Second, 0, match("ready: first round of health checks done"), "ready")
	cfg := func() *tls.Config { return &tls.Config{RootCAs: pki.pool(), ServerName: "vigil.test"} }

	// Load: 4 long-lived clients per listener, and a loop of new
	// connections that records which certificate each one saw.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var calls, failed atomic.Int64
	var failMu sync.Mutex
	var failures []string
	fail := func(err error) {
		failed.Add(1)
		failMu.Lock()
		failures = append(failures, err.Error())
		failMu.Unlock()
	}
	for _, l := range []string{"api", "raw"} {
		for range 4 {
			c := tlsClient(t, v.listener(l), cfg())
			wg.Go(func() {
				for ctx.Err() == nil {
					rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
					_, err := c.call(rctx)
					rcancel()
					if err != nil && ctx.Err() == nil {
						fail(err)
					}
					calls.Add(1)
				}
			})
		}
	}
	var seenMu sync.Mutex
	seen := map[string]int{} // serial -> connections
	var lastSerial atomic.Value
	wg.Go(func() {
		for ctx.Err() == nil {
			for _, l := range []string{"api", "raw"} {
				c, err := tls.Dial("tcp", v.listener(l), &tls.Config{RootCAs: pki.pool(), ServerName: "vigil.test", NextProtos: []string{"h2"}})
				if err != nil {
					if ctx.Err() == nil {
						fail(fmt.Errorf("new TLS connection to %s: %w", l, err))
					}
					continue
				}
				s := c.ConnectionState().PeerCertificates[0].SerialNumber.String()
				c.Close()
				seenMu.Lock()
				seen[s]++
				seenMu.Unlock()
				lastSerial.Store(s)
			}
		}
	})
	stopLoad := func() {
		cancel()
		wg.Wait()
	}
	defer stopLoad()
	serial := func(l *certgen.Leaf) string { return l.Cert.SerialNumber.String() }
	// A rotation is done once vigil logged it; after that, every new
	// connection must see the new certificate.
	rotated := func(what string, from int, want *certgen.Leaf) {
		t.Helper()
		v.wait(10*time.Second, from, match("tls certificate reloaded", "listener", "api"), what+": api reloaded")
		v.wait(10*time.Second, from, match("tls certificate reloaded", "listener", "raw"), what+": raw reloaded")
		for range 20 {
			for _, l := range []string{"api", "raw"} {
				c, err := tls.Dial("tcp", v.listener(l), &tls.Config{RootCAs: pki.pool(), ServerName: "vigil.test", NextProtos: []string{"h2"}})
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				got := c.ConnectionState().PeerCertificates[0].SerialNumber.String()
				c.Close()
				if got != serial(want) {
					t.Fatalf("%s: a new connection to %s after the reload saw the old certificate", what, l)
				}
			}
		}
	}
	time.Sleep(300 * time.Millisecond) // some load on the first certificate

	// 1. The ..data swap.
	second := newLeaf()
	writeVersion("..v2", second)
	mark := v.mark()
	mustSymlink(t, "..v2", filepath.Join(dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	_ = os.RemoveAll(filepath.Join(dir, "..v1"))
	rotated("..data swap", mark, second)

	// 2. A broken rotation: a key that is not the certificate's.
	third := newLeaf()
	writeVersion("..v3", &certgen.Leaf{CertPEM: third.CertPEM, KeyPEM: first.KeyPEM})
	mark = v.mark()
	mustSymlink(t, "..v3", filepath.Join(dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	r, _ := v.wait(10*time.Second, mark, match("tls reload rejected"), "the broken rotation rejected")
	if r.str("level") != "ERROR" || !strings.Contains(r.str("error"), "does not match") || r.str("file") == "" {
		t.Errorf("rejection record: %v", r)
	}
	time.Sleep(300 * time.Millisecond)
	if s, _ := lastSerial.Load().(string); s != serial(second) {
		t.Errorf("after the broken rotation a new connection saw %s, want the second certificate", s)
	}

	// 3. Written in place (through the symlinks, into ..v3).
	fourth := newLeaf()
	mark = v.mark()
	if _, _, err := fourth.Write(filepath.Join(dir, "..v3"), "tls"); err != nil {
		t.Fatal(err)
	}
	rotated("write in place", mark, fourth)
	time.Sleep(300 * time.Millisecond)
	stopLoad()

	failMu.Lock()
	defer failMu.Unlock()
	if failed.Load() > 0 {
		t.Errorf("%d of %d RPCs or connections failed during the rotations: %v", failed.Load(), calls.Load(), failures[:min(len(failures), 5)])
	}
	seenMu.Lock()
	defer seenMu.Unlock()
	if seen[serial(first)] == 0 || seen[serial(second)] == 0 || seen[serial(fourth)] == 0 || seen[serial(third)] != 0 {
		t.Errorf("connections per certificate: %v", seen)
	}
	t.Logf("%d RPCs, connections per certificate %v", calls.Load(), seen)
}

func mustSymlink(t testing.TB, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// TestTLSReloadKeepsConnections: a config reload that changes only a
// listener's tls section (another certificate, min_version) keeps its
// socket and its established connections: a stream open across the
// reload goes on, and new connections get the new settings.
func TestTLSReloadKeepsConnections(t *testing.T) {
	pki := newTestPKI(t)
	c1, k1, _ := pki.issue("one", certgen.Options{Names: []string{"vigil.test"}})
	c2, k2, two := pki.issue("two", certgen.Options{Names: []string{"vigil.test"}})
	b := startBackend(t, "b")
	conf := func(cert, key, extra string) string {
		y := fmt.Sprintf("tls: {cert_file: %s, key_file: %s%s}", cert, key, extra)
		return tlsListenerConfig([]string{b.addr}, y, y)
	}
	v := startVigil(t, conf(c1, k1, ""))
	v.wait(10*time.Second, 0, match("ready: first round of health checks done"), "ready")
	api, raw := v.listener("api"), v.listener("raw")
	cl := tlsClient(t, api, &tls.Config{RootCAs: pki.pool(), ServerName: "vigil.test"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := cl.tc.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pingPongOnce := func() error {
		if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 8}}}); err != nil {
			return err
		}
		_, err := stream.Recv()
		return err
	}
	if err := pingPongOnce(); err != nil {
		t.Fatal(err)
	}
	rawConn, err := tls.Dial("tcp", raw, &tls.Config{RootCAs: pki.pool(), ServerName: "vigil.test", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer rawConn.Close()
	rawClient := dialOverConn(t, rawConn)
	if _, err := rawClient.call(ctx); err != nil {
		t.Fatal(err)
	}

	mark := v.mark()
	v.rewrite(conf(c2, k2, `, min_version: "1.3"`))
	v.wait(10*time.Second, mark, match("config reloaded"), "config reloaded")
	v.wait(10*time.Second, mark, match("listener tls updated", "listener", "api"), "api tls updated in place")
	v.wait(10*time.Second, mark, match("listener tls updated", "listener", "raw"), "raw tls updated in place")
	if rs := v.logs.find(mark, match("listening")); len(rs) > 0 {
		t.Errorf("the reload started a listener anew: %v", rs)
	}
	if got := v.listener("api"); got != api {
		t.Errorf("api moved from %s to %s", api, got)
	}
	if err := pingPongOnce(); err != nil {
		t.Errorf("the stream open across the reload broke: %v", err)
	}
	if _, err := rawClient.call(ctx); err != nil {
		t.Errorf("the tcp connection open across the reload broke: %v", err)
	}
	for _, addr := range []string{api, raw} {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pki.pool(), ServerName: "vigil.test", NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		st := c.ConnectionState()
		c.Close()
		if st.PeerCertificates[0].SerialNumber.Cmp(two.Cert.SerialNumber) != 0 || st.Version != tls.VersionTLS13 {
			t.Errorf("%s: a new connection after the reload: version %x, certificate %v", addr, st.Version, st.PeerCertificates[0].Subject)
		}
	}
	// A reload naming a missing file is rejected whole, at the field.
	mark = v.mark()
	v.rewrite(conf(filepath.Join(pki.dir, "missing.crt"), k2, ""))
	r, _ := v.wait(10*time.Second, mark, match("config rejected"), "config rejected")
	if errs := fmt.Sprint(r["errors"]); !strings.Contains(errs, "listeners[0].tls.cert_file") || !strings.Contains(errs, "no such file") {
		t.Errorf("rejection: %v", errs)
	}
	if err := pingPongOnce(); err != nil {
		t.Errorf("the stream broke after a rejected reload: %v", err)
	}
	_ = stream.CloseSend()
}

// dialOverConn runs a gRPC client over one established connection.
func dialOverConn(t testing.TB, conn net.Conn) *client {
	t.Helper()
	var used atomic.Bool
	cc, err := grpc.NewClient("passthrough:///over-conn",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			if used.Swap(true) {
				return nil, fmt.Errorf("the one connection is used")
			}
			return conn, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return &client{conn: cc, tc: testpb.NewTestServiceClient(cc)}
}

// TestValidateTLSFiles: `vigil validate` reports a missing file, bad PEM,
// a mismatched key and an expired certificate at FILE:LINE:COL.
func TestValidateTLSFiles(t *testing.T) {
	pki := newTestPKI(t)
	good, goodKey, _ := pki.issue("good", certgen.Options{})
	_, otherKey, _ := pki.issue("other", certgen.Options{})
	expired, expiredKey, _ := pki.issue("expired", certgen.Options{NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(-48 * time.Hour)})
	garbage := filepath.Join(pki.dir, "garbage.crt")
	if err := os.WriteFile(garbage, []byte("not PEM\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`listeners:
  - name: a
    address: 127.0.0.1:0
    cluster: c
    tls:
      cert_file: %s
      key_file: %s
  - name: b
    address: 127.0.0.1:0
    cluster: c
    tls:
      certificates:
        - cert_file: %s
          key_file: %s
        - cert_file: %s
          key_file: %s
        - cert_file: %s
          key_file: %s
clusters:
  - name: c
    endpoints: [{address: 127.0.0.1:1}]
`, filepath.Join(pki.dir, "missing.crt"), goodKey, garbage, goodKey, good, otherKey, expired, expiredKey)
	path := filepath.Join(t.TempDir(), "vigil.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin("vigil"), "validate", "--config", path).CombinedOutput()
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != 1 {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{
		path + ":6:18: listeners[0].tls.cert_file: ",
		path + ":13:22: listeners[1].tls.certificates[0].cert_file: ",
		path + ":16:21: listeners[1].tls.certificates[1].key_file: ",
		path + ":17:22: listeners[1].tls.certificates[2].cert_file: ",
	}
	msgs := []string{"no such file", "not PEM", "does not match", "expired 2 days ago"}
	if len(lines) != len(want) {
		t.Fatalf("validate printed:\n%s", out)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) || !strings.Contains(lines[i], msgs[i]) {
			t.Errorf("line %d: %s\nwant %s...%s", i, lines[i], want[i], msgs[i])
		}
	}
}
