package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/peer"

	"github.com/vigil-proxy/vigil/internal/certgen"
)

// seenClients records the serial numbers of the client certificates a
// TLS backend verified.
type seenClients struct {
	mu      sync.Mutex
	serials map[string]int
	rpcs    map[string]int // UnaryCalls by the serial of their connection's client certificate
}

// onCall counts a UnaryCall by its connection's client certificate.
func (s *seenClients) onCall(ctx context.Context) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rpcs == nil {
		s.rpcs = map[string]int{}
	}
	s.rpcs[ti.State.PeerCertificates[0].SerialNumber.String()]++
}

func (s *seenClients) rpcCount(serial string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rpcs[serial]
}

func (s *seenClients) verify(cs tls.ConnectionState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serials == nil {
		s.serials = map[string]int{}
	}
	if len(cs.PeerCertificates) > 0 {
		s.serials[cs.PeerCertificates[0].SerialNumber.String()]++
	}
	return nil
}

func (s *seenClients) count(serial string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serials[serial]
}

// backendTLS is a backend's server configuration: leaf's certificate and,
// with clientCAs, client certificates required (mTLS).
func backendTLS(leaf *certgen.Leaf, clientCAs *x509.CertPool, seen *seenClients) *tls.Config {
	cfg := &tls.Config{Certificates: []tls.Certificate{leaf.TLS()}}
	if clientCAs != nil {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = clientCAs
	}
	if seen != nil {
		cfg.VerifyConnection = seen.verify
	}
	return cfg
}

func issueLeaf(t testing.TB, ca *certgen.CA, opts certgen.Options) *certgen.Leaf {
	t.Helper()
	l, err := ca.Issue(opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// clusterTLSYAML is a cluster's tls section, one field a line.
func clusterTLSYAML(fields ...string) string {
	var b strings.Builder
	b.WriteString("tls:\n")
	for i := 0; i+1 < len(fields); i += 2 {
		fmt.Fprintf(&b, "  %s: %s\n", fields[i], fields[i+1])
	}
	if len(fields) == 0 {
		return "tls: {}\n"
	}
	return b.String()
}

// TestClusterTLS: clusters reach grpc-go backends over TLS, verified as
// an IP SAN (no server_name) and by server_name, and over mTLS to a
// backend that requires client certificates; health checks (Check, and
// Watch) go over the same transport, traffic flows through grpc and tcp
// listeners, and /clusters says which clusters use TLS.
func TestClusterTLS(t *testing.T) {
	pki := newTestPKI(t)
	clientCA, err := certgen.NewCA("vigil clients")
	if err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey, clientLeaf := func() (string, string, *certgen.Leaf) {
		l := issueLeaf(t, clientCA, certgen.Options{Names: []string{"vigil"}})
		c, k, err := l.Write(pki.dir, "client")
		if err != nil {
			t.Fatal(err)
		}
		return c, k, l
	}()
	var seen seenClients
	b1 := startBackend(t, "tls", withTLS(backendTLS(issueLeaf(t, pki.ca, certgen.Options{Names: []string{"127.0.0.1"}}), nil, nil)))
	b2 := startBackend(t, "mtls", withTLS(backendTLS(issueLeaf(t, pki.ca, certgen.Options{Names: []string{"backend.test"}}), clientCA.Pool(), &seen)))
	b3 := startBackend(t, "plain")
	vcert, vkey, _ := pki.issue("vigil", certgen.Options{Names: []string{"vigil.test"}})
	cfg := yamlConfig{
		Admin: true,
		Listeners: []yamlListener{
			{Name: "api", Cluster: "tls"},
			{Name: "m", Cluster: "mtls"},
			{Name: "raw", Protocol: "tcp", Cluster: "mtls", Extra: fmt.Sprintf("tls: {cert_file: %s, key_file: %s}", vcert, vkey)},
			{Name: "p", Cluster: "plain"},
		},
		Clusters: []yamlCluster{
			{Name: "tls", Endpoints: []string{b1.addr}, Extra: clusterTLSYAML("ca_file", pki.caFile)},
			{Name: "mtls", Endpoints: []string{b2.addr}, Extra: clusterTLSYAML("ca_file", pki.caFile, "server_name", "backend.test",
				"cert_file", clientCert, "key_file", clientKey),
				Health: "mode: watch\ninterval: 1s\ntimeout: 1s\nunhealthy_threshold: 2\nhealthy_threshold: 1"},
			{Name: "plain", Endpoints: []string{b3.addr}},
		},
	}.String()
	v := startVigil(t, cfg)
	v.wait(15*time.Second, 0, match("ready: first round of health checks done"), "ready")
	for _, name := range []string{"tls", "mtls", "plain"} {
		v.wait(10*time.Second, 0, match("endpoint admitted", "cluster", name), "admitted "+name)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for listener, want := range map[string]string{"api": "tls", "m": "mtls", "p": "plain"} {
		c := dialClient(t, v.listener(listener))
		for range 20 {
			id, err := c.call(ctx)
			if err != nil || id != want {
				t.Fatalf("listener %s: served by %q, %v; want %s", listener, id, err, want)
			}
		}
	}
	// TLS on both sides through a tcp listener: the client's h2 is offered
	// to the backend.
	c := tlsClient(t, v.listener("raw"), &tls.Config{RootCAs: pki.pool(), ServerName: "vigil.test"})
	for range 5 {
		id, err := c.call(ctx)
		if err != nil || id != "mtls" {
			t.Fatalf("tcp listener to the mtls cluster: %q, %v", id, err)
		}
	}
	if b1.probes.Load() == 0 {
		t.Errorf("the TLS backend was never health-checked with Check")
	}
	// The mTLS backend saw vigil's client certificate: on the Watch
	// stream's connection and on the data connections.
	if n := seen.count(clientLeaf.Cert.SerialNumber.String()); n < 2 {
		t.Errorf("the mTLS backend verified vigil's client certificate %d times, want the probe's and the traffic's", n)
	}

	doc := clusters(t, "http://"+v.adminAddr())
	for _, cl := range doc["clusters"].([]any) {
		cm := cl.(map[string]any)
		if want := cm["name"] != "plain"; cm["tls"] != want {
			t.Errorf("/clusters: cluster %v has tls=%v, want %v", cm["name"], cm["tls"], want)
		}
	}
	if n := len(v.logs.find(0, match("endpoint evicted"))); n != 0 {
		t.Errorf("%d evictions:\n%s", n, v.logs.dump())
	}
}

// TestClusterTLSFailures: a backend whose certificate fails verification
// is evicted as a transport failure, reason UNAVAILABLE, with an error
// that names the problem and a hint at the usual mistake: a wrong
// server_name, a wrong CA, an expired certificate, in check and watch
// mode; so are a plaintext backend on a TLS cluster and a TLS backend on
// a plaintext one.
func TestClusterTLSFailures(t *testing.T) {
	pki := newTestPKI(t)
	otherCA, err := certgen.NewCA("someone else's CA")
	if err != nil {
		t.Fatal(err)
	}
	ipOnly := backendTLS(issueLeaf(t, pki.ca, certgen.Options{Names: []string{"127.0.0.1", "backend.test"}}), nil, nil)
	good := startBackend(t, "good", withTLS(ipOnly))
	foreign := startBackend(t, "foreign", withTLS(backendTLS(issueLeaf(t, otherCA, certgen.Options{Names: []string{"127.0.0.1"}}), nil, nil)))
	expired := startBackend(t, "expired", withTLS(backendTLS(issueLeaf(t, pki.ca, certgen.Options{Names: []string{"127.0.0.1"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}), nil, nil)))
	plain := startBackend(t, "plain")
	clientCA, err := certgen.NewCA("vigil clients")
	if err != nil {
		t.Fatal(err)
	}
	mtls := startBackend(t, "mtls", withTLS(backendTLS(issueLeaf(t, pki.ca, certgen.Options{Names: []string{"127.0.0.1"}}), clientCA.Pool(), nil)))
	strangerCert, strangerKey, _ := pki.issue("stranger", certgen.Options{Names: []string{"vigil"}})
	ca := clusterTLSYAML("ca_file", pki.caFile)
	watch := "mode: watch\ninterval: 200ms\ntimeout: 200ms\nunhealthy_threshold: 2\nhealthy_threshold: 1"
	cases := []struct {
		cluster, endpoint, extra, health string
		err, hint                        []string
	}{
		{"name", good.addr, clusterTLSYAML("ca_file", pki.caFile, "server_name", "wrong.test"), "",
			[]string{"name mismatch", "wrong.test"}, []string{"tls.server_name", "backend.test, 127.0.0.1", `not "wrong.test"`}},
		{"name-watch", good.addr, clusterTLSYAML("ca_file", pki.caFile, "server_name", "wrong.test"), watch,
			[]string{"name mismatch"}, []string{"tls.server_name"}},
		{"ca", foreign.addr, ca, "", []string{"unknown authority"}, []string{"tls.ca_file", "someone else's CA"}},
		{"ca-watch", foreign.addr, ca, watch, []string{"unknown authority"}, []string{"tls.ca_file"}},
		{"expired", expired.addr, ca, "", []string{"expired"}, []string{"expired at", "renew it"}},
		{"plain-backend", plain.addr, ca, "", []string{"does not speak TLS"}, []string{"plaintext", "remove the cluster's tls"}},
		{"tls-backend", good.addr, "", "", []string{"closed the connection"}, []string{"give the cluster a tls section"}},
		{"no-client-cert", mtls.addr, ca, "", []string{"refused the handshake", "certificate required"}, []string{"tls.cert_file and key_file"}},
		{"foreign-client-cert", mtls.addr, clusterTLSYAML("ca_file", pki.caFile, "cert_file", strangerCert, "key_file", strangerKey), watch,
			[]string{"refused the handshake"}, []string{"tls.cert_file and key_file"}},
	}
	var cls []yamlCluster
	for _, c := range cases {
		cls = append(cls, yamlCluster{Name: c.cluster, Endpoints: []string{c.endpoint}, Extra: c.extra, Health: c.health})
	}
	cls = append(cls, yamlCluster{Name: "ok", Endpoints: []string{good.addr}, Extra: ca})
	v := startVigil(t, yamlConfig{Admin: true, Listeners: []yamlListener{{Name: "api", Cluster: "ok"}}, Clusters: cls}.String())
	for _, c := range cases {
		r, _ := v.wait(15*time.Second, 0, match("endpoint evicted", "cluster", c.cluster), "evicted "+c.cluster)
		if r.str("reason") != "UNAVAILABLE" {
			t.Errorf("%s: reason %q, want UNAVAILABLE: %v", c.cluster, r.str("reason"), r)
		}
		for _, s := range c.err {
			if !strings.Contains(r.str("error"), s) {
				t.Errorf("%s: error %q does not say %q", c.cluster, r.str("error"), s)
			}
		}
		for _, s := range c.hint {
			if !strings.Contains(r.str("hint"), s) {
				t.Errorf("%s: hint %q does not say %q", c.cluster, r.str("hint"), s)
			}
		}
		doc := clusters(t, "http://"+v.adminAddr())
		_, ep := endpointOf(t, doc, c.cluster, c.endpoint)
		if ep["health"] != "unhealthy" || ep["cause"] != "transport" || ep["reason"] != "UNAVAILABLE" || ep["hint"] != r.str("hint") {
			t.Errorf("%s in /clusters: %v", c.cluster, ep)
		}
	}
	v.wait(10*time.Second, 0, match("endpoint admitted", "cluster", "ok"), "the good backend admitted")
	if t.Failed() {
		t.Logf("vigil's log:\n%s", v.logs.dump())
	}
}

// TestClusterTLSRotation: the cluster's client certificate is rotated
// (renamed over) under load: no RPC fails, no connection is closed, and
// every connection made after the reload presents the new certificate; a
// broken rotation is rejected (tls reload rejected) and the previous
// certificate keeps being presented.
func TestClusterTLSRotation(t *testing.T) {
	pki := newTestPKI(t)
	clientCA, err := certgen.NewCA("vigil clients")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	first := issueLeaf(t, clientCA, certgen.Options{Names: []string{"vigil"}})
	certFile, keyFile, err := first.Write(dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	var seen seenClients
	b := startBackend(t, "mtls", withTLS(backendTLS(issueLeaf(t, pki.ca, certgen.Options{Names: []string{"127.0.0.1"}}), clientCA.Pool(), &seen)))
	onCall := seen.onCall
	b.onCall.Store(&onCall)
	vcert, vkey, _ := pki.issue("vigil", certgen.Options{Names: []string{"vigil.test"}})
	v := startVigil(t, yamlConfig{
		Admin: true,
		Listeners: []yamlListener{
			{Name: "api", Cluster: "c"},
			{Name: "raw", Protocol: "tcp", Cluster: "c", Extra: fmt.Sprintf("tls: {cert_file: %s, key_file: %s}", vcert, vkey)},
		},
		Clusters: []yamlCluster{{Name: "c", Endpoints: []string{b.addr},
			Extra:  clusterTLSYAML("ca_file", pki.caFile, "cert_file", certFile, "key_file", keyFile),
			Health: "mode: watch\ninterval: 1s\ntimeout: 1s\nunhealthy_threshold: 2\nhealthy_threshold: 1"}},
	}.String())
	v.wait(15*time.Second, 0, match("endpoint admitted", "cluster", "c"), "admitted")

	// Load: RPCs on one long-lived connection through the grpc listener,
	// and RPCs each on a new TLS connection through the tcp listener (a
	// new connection to the backend each).
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []error
	var calls int
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if err != nil {
			failures = append(failures, err)
		}
	}
	api := dialClient(t, v.listener("api"))
	clientTLS := &tls.Config{RootCAs: pki.pool(), ServerName: "vigil.test", NextProtos: []string{"h2"}}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := api.call(cctx)
			ccancel()
			if ctx.Err() == nil {
				fail(err)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			err := callOverNewTLSConnection(ctx, v.listener("raw"), clientTLS)
			if ctx.Err() == nil {
				fail(err)
			}
		}
	}()
	stop := func() {
		cancel()
		wg.Wait()
	}
	defer stop()
	eventually(t, 10*time.Second, func() bool { return seen.count(first.Cert.SerialNumber.String()) >= 5 }, "traffic with the first certificate")

	// A good rotation, renamed over: key, then certificate.
	second := issueLeaf(t, clientCA, certgen.Options{Names: []string{"vigil"}})
	mark := v.mark()
	if _, _, err := second.Write(dir, "next"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "next.key"), keyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "next.crt"), certFile); err != nil {
		t.Fatal(err)
	}
	v.wait(10*time.Second, mark, match("tls certificate reloaded", "cluster", "c"), "the reload")
	// Every connection from now on presents the second certificate: the
	// first stops growing, the second grows.
	// Once one new connection presented it, every later one does: the
	// tcp listener's connections are made one after the other, and the
	// grpc listener's stay open.
	eventually(t, 10*time.Second, func() bool { return seen.count(second.Cert.SerialNumber.String()) >= 1 }, "a connection with the second certificate")
	before := seen.count(first.Cert.SerialNumber.String())
	eventually(t, 10*time.Second, func() bool { return seen.count(second.Cert.SerialNumber.String()) >= 20 }, "traffic with the second certificate")
	if after := seen.count(first.Cert.SerialNumber.String()); after != before {
		t.Errorf("%d connections presented the old certificate after the reload", after-before)
	}
	// No connection was closed: the grpc listener's connection to the
	// backend, made with the first certificate, still carries RPCs.
	oldRPCs := seen.rpcCount(first.Cert.SerialNumber.String())
	eventually(t, 10*time.Second, func() bool { return seen.rpcCount(first.Cert.SerialNumber.String()) >= oldRPCs+20 },
		"RPCs on the connection made before the reload")

	// A broken rotation: rejected, and the second certificate stays.
	mark = v.mark()
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\nbroken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, _ := v.wait(10*time.Second, mark, match("tls reload rejected", "cluster", "c"), "the rejection")
	if r.str("level") != "ERROR" || r.str("file") != certFile {
		t.Errorf("rejection record: %v", r)
	}
	n := seen.count(second.Cert.SerialNumber.String())
	eventually(t, 10*time.Second, func() bool { return seen.count(second.Cert.SerialNumber.String()) >= n+10 }, "traffic with the second certificate after the broken rotation")
	stop()

	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Fatalf("%d of %d RPCs failed during the rotations, first: %v", len(failures), calls, failures[0])
	}
	if calls < 50 {
		t.Fatalf("only %d RPCs", calls)
	}
	if evicted := v.logs.find(0, match("endpoint evicted")); len(evicted) > 0 {
		t.Errorf("evictions: %v", evicted)
	}
	t.Logf("%d RPCs, none failed; old certificate on %d connections (%d RPCs), new on %d (%d RPCs)", calls,
		seen.count(first.Cert.SerialNumber.String()), seen.rpcCount(first.Cert.SerialNumber.String()),
		seen.count(second.Cert.SerialNumber.String()), seen.rpcCount(second.Cert.SerialNumber.String()))
}

// callOverNewTLSConnection makes one UnaryCall over a TLS connection of
// its own.
func callOverNewTLSConnection(ctx context.Context, addr string, cfg *tls.Config) error {
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg.Clone())))
	if err != nil {
		return err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = testpb.NewTestServiceClient(conn).UnaryCall(cctx, &testpb.SimpleRequest{FillServerId: true})
	return err
}

// TestClusterTLSReload: a configuration reload that fixes a cluster's tls
// (a wrong server_name) readmits its endpoint, its probe connection
// being made anew with the new settings, and traffic flows; one that
// turns tls off evicts the TLS backend with the plaintext hint.
func TestClusterTLSReload(t *testing.T) {
	pki := newTestPKI(t)
	b := startBackend(t, "tls", withTLS(backendTLS(issueLeaf(t, pki.ca, certgen.Options{Names: []string{"backend.test"}}), nil, nil)))
	config := func(tlsSection string) string {
		return yamlConfig{Admin: true, Listeners: []yamlListener{{Name: "api", Cluster: "c"}},
			Clusters: []yamlCluster{{Name: "c", Endpoints: []string{b.addr}, Extra: tlsSection}}}.String()
	}
	v := startVigil(t, config(clusterTLSYAML("ca_file", pki.caFile, "server_name", "wrong.test")))
	v.wait(15*time.Second, 0, match("endpoint evicted", "cluster", "c"), "evicted for the wrong server_name")

	mark := v.mark()
	v.rewrite(config(clusterTLSYAML("ca_file", pki.caFile, "server_name", "backend.test")))
	v.wait(15*time.Second, mark, match("endpoint readmitted", "cluster", "c"), "readmitted with the right server_name")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := dialClient(t, v.listener("api"))
	for range 10 {
		if id, err := c.call(ctx); err != nil || id != "tls" {
			t.Fatalf("after the fix: %q, %v", id, err)
		}
	}

	mark = v.mark()
	v.rewrite(config(""))
	r, _ := v.wait(15*time.Second, mark, match("endpoint evicted", "cluster", "c"), "evicted once tls is off")
	if !strings.Contains(r.str("hint"), "give the cluster a tls section") {
		t.Errorf("hint after turning tls off: %v", r)
	}
}

// clientCertExpiry is the vigil_tls_certificate_expiry_seconds series of
// cluster's client certificates, by file.
func clientCertExpiry(t testing.TB, base, cluster string) map[string]float64 {
	t.Helper()
	series, err := chaosScrapeSeries(base, "vigil_tls_certificate_expiry_seconds")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for key, v := range series {
		labels := strings.Split(key, ",")
		if !slices.Contains(labels, fmt.Sprintf("cluster=%q", cluster)) {
			continue
		}
		for _, l := range labels {
			if f, ok := strings.CutPrefix(l, "file="); ok {
				out[strings.Trim(f, `"`)] = v
			}
		}
	}
	return out
}

// TestClusterTLSCertificateExpiry: the client certificate a cluster
// presents to its endpoints has its vigil_tls_certificate_expiry_seconds
// series (cluster set, listener empty), which follows a rotation of the
// files and goes away when a reload drops the cluster's client
// certificate, or the cluster.
func TestClusterTLSCertificateExpiry(t *testing.T) {
	pki := newTestPKI(t)
	clientCA, err := certgen.NewCA("vigil clients")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	now := time.Now()
	first := issueLeaf(t, clientCA, certgen.Options{Names: []string{"vigil"}, NotAfter: now.Add(48 * time.Hour)})
	certFile, keyFile, err := first.Write(dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	b := startBackend(t, "mtls", withTLS(backendTLS(issueLeaf(t, pki.ca, certgen.Options{Names: []string{"127.0.0.1"}}), clientCA.Pool(), nil)))
	plain := startBackend(t, "plain")
	mtls := clusterTLSYAML("ca_file", pki.caFile, "cert_file", certFile, "key_file", keyFile)
	config := func(clusters ...yamlCluster) string {
		return yamlConfig{Admin: true, Listeners: []yamlListener{{Name: "api", Cluster: "d"}},
			Clusters: append([]yamlCluster{{Name: "d", Endpoints: []string{plain.addr}}}, clusters...)}.String()
	}
	c := func(tlsSection string) yamlCluster {
		return yamlCluster{Name: "c", Endpoints: []string{b.addr}, Extra: tlsSection}
	}
	v := startVigil(t, config(c(mtls)))
	v.wait(15*time.Second, 0, match("endpoint admitted", "cluster", "c"), "admitted over mTLS")
	base := "http://" + v.adminAddr()
	near := func(got float64, want time.Duration) bool {
		return got > (want-time.Hour).Seconds() && got <= want.Seconds()
	}

	exp := clientCertExpiry(t, base, "c")
	if len(exp) != 1 || !near(exp[certFile], 48*time.Hour) {
		t.Fatalf("client certificate expiry: %v, want %s at about 48h", exp, certFile)
	}
	if got := clientCertExpiry(t, base, "d"); len(got) != 0 {
		t.Errorf("a plaintext cluster has expiry series: %v", got)
	}
	all, err := chaosScrapeSeries(base, "vigil_tls_certificate_expiry_seconds")
	if err != nil {
		t.Fatal(err)
	}
	for key := range all {
		if !strings.Contains(key, `listener=""`) && strings.Contains(key, "listener=") {
			t.Errorf("a cluster's certificate is labelled with a listener: %s", key)
		}
	}

	// Rotation, renamed over: the new pair's expiry replaces the old one's.
	second := issueLeaf(t, clientCA, certgen.Options{Names: []string{"vigil"}, NotAfter: now.Add(72 * time.Hour)})
	mark := v.mark()
	if _, _, err := second.Write(dir, "next"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "next.key"), keyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "next.crt"), certFile); err != nil {
		t.Fatal(err)
	}
	v.wait(10*time.Second, mark, match("tls certificate reloaded", "cluster", "c"), "the reload")
	eventually(t, 10*time.Second, func() bool {
		exp := clientCertExpiry(t, base, "c")
		return len(exp) == 1 && near(exp[certFile], 72*time.Hour)
	}, "the rotated certificate's expiry (72h)")

	// A broken rotation keeps the second pair, and its expiry.
	mark = v.mark()
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\nbroken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v.wait(10*time.Second, mark, match("tls reload rejected", "cluster", "c"), "the rejection")
	if exp := clientCertExpiry(t, base, "c"); len(exp) != 1 || !near(exp[certFile], 72*time.Hour) {
		t.Errorf("after a broken rotation: %v, want the second certificate's 72h", exp)
	}
	if _, _, err := second.Write(dir, "client"); err != nil {
		t.Fatal(err)
	}

	// A reload that keeps tls but drops the client certificate: no series.
	mark = v.mark()
	v.rewrite(config(c(clusterTLSYAML("ca_file", pki.caFile))))
	v.wait(15*time.Second, mark, match("config reloaded"), "reload without cert_file")
	eventually(t, 10*time.Second, func() bool { return len(clientCertExpiry(t, base, "c")) == 0 }, "no series without a client certificate")

	// Back, then the cluster's tls removed, then the cluster removed.
	mark = v.mark()
	v.rewrite(config(c(mtls)))
	v.wait(15*time.Second, mark, match("config reloaded"), "reload with cert_file")
	eventually(t, 10*time.Second, func() bool { return len(clientCertExpiry(t, base, "c")) == 1 }, "the series back with the client certificate")
	mark = v.mark()
	v.rewrite(config(c("")))
	v.wait(15*time.Second, mark, match("config reloaded"), "reload without tls")
	eventually(t, 10*time.Second, func() bool { return len(clientCertExpiry(t, base, "c")) == 0 }, "no series once the cluster is plaintext")
	mark = v.mark()
	v.rewrite(config(c(mtls)))
	v.wait(15*time.Second, mark, match("config reloaded"), "reload with tls again")
	eventually(t, 10*time.Second, func() bool { return len(clientCertExpiry(t, base, "c")) == 1 }, "the series back with tls")
	mark = v.mark()
	v.rewrite(config())
	v.wait(15*time.Second, mark, match("config reloaded"), "reload without the cluster")
	eventually(t, 10*time.Second, func() bool { return len(clientCertExpiry(t, base, "c")) == 0 }, "no series once the cluster is removed")
}
