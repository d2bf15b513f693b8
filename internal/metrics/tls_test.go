package metrics

import (
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/balancer/tlsterm"
	"github.com/vigil-proxy/vigil/internal/certgen"
	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/tlsconf"
)

func TestTLSSeries(t *testing.T) {
	if numTLSResults != len(tlsterm.Results) {
		t.Fatalf("numTLSResults = %d, tlsterm has %d results", numTLSResults, len(tlsterm.Results))
	}
	s := newTestStore(t)
	s.addCluster("orders", "127.0.0.1:1")
	s.addListener("api", config.ProtocolGRPC, "orders")
	s.addListener("plain", config.ProtocolGRPC, "orders")
	m := New(Options{Store: s.Store})
	m.GRPC("plain")
	hook := m.TLSHandshake("api")
	m.TLSCertificates("api", []tlsconf.Cert{{File: "a.crt", NotAfter: time.Now().Add(100 * time.Second)}, {File: "b.crt", NotAfter: time.Now().Add(-10 * time.Second)}})
	hook(tlsterm.ResultOK, nil)
	hook(tlsterm.ResultOK, nil)
	hook(tlsterm.ResultTimeout, nil)
	hook("something new", nil)
	fams := scrape(t, m)
	mustSample(t, fams, 2, "vigil_tls_handshakes_total", "listener", "api", "result", "ok")
	mustSample(t, fams, 1, "vigil_tls_handshakes_total", "listener", "api", "result", "timeout")
	mustSample(t, fams, 1, "vigil_tls_handshakes_total", "listener", "api", "result", "error")
	mustSample(t, fams, 0, "vigil_tls_handshakes_total", "listener", "api", "result", "client_cert")
	for _, series := range fams["vigil_tls_handshakes_total"].GetMetric() {
		for _, lp := range series.GetLabel() {
			if lp.GetValue() == "plain" {
				t.Fatal("a plaintext listener has TLS series")
			}
		}
	}
	var a, b float64
	for _, series := range fams["vigil_tls_certificate_expiry_seconds"].GetMetric() {
		for _, lp := range series.GetLabel() {
			switch lp.GetValue() {
			case "a.crt":
				a = series.GetGauge().GetValue()
			case "b.crt":
				b = series.GetGauge().GetValue()
			}
		}
	}
	if a < 90 || a > 100 || b > -9 || b < -20 {
		t.Fatalf("expiry a=%v b=%v", a, b)
	}
	m.TLSCertificates("api", nil)
	if fams := scrape(t, m); fams["vigil_tls_handshakes_total"] != nil {
		t.Fatal("TLS series stay after the listener turned plaintext")
	}
}

// TestTLSClientSeries: a cluster's client certificate, read from a real
// tlsconf.Client, is exported with the cluster label and the listener
// label empty, and goes away when the cluster's TLS does.
func TestTLSClientSeries(t *testing.T) {
	ca, err := certgen.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(certgen.Options{Names: []string{"vigil"}, NotAfter: time.Now().Add(50 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := leaf.Write(t.TempDir(), "client")
	if err != nil {
		t.Fatal(err)
	}
	st := tlsconf.New(tlsconf.Options{})
	withCert, err := st.Client(config.ClusterTLS{CertFile: certFile, KeyFile: keyFile}, tlsconf.ClientOptions{Cluster: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(withCert.Close)
	noCert, err := st.Client(config.ClusterTLS{}, tlsconf.ClientOptions{Cluster: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(noCert.Close)

	s := newTestStore(t)
	s.addCluster("orders", "127.0.0.1:1")
	s.addCluster("billing", "127.0.0.1:2")
	m := New(Options{Store: s.Store})
	m.TLSClientCertificates("orders", withCert)
	m.TLSClientCertificates("billing", noCert)
	fams := scrape(t, m)
	series := fams["vigil_tls_certificate_expiry_seconds"].GetMetric()
	if len(series) != 1 {
		t.Fatalf("%d expiry series, want 1 (orders' client certificate): %v", len(series), series)
	}
	labels := map[string]string{}
	for _, lp := range series[0].GetLabel() {
		labels[lp.GetName()] = lp.GetValue()
	}
	if labels["cluster"] != "orders" || labels["listener"] != "" || labels["file"] != certFile {
		t.Errorf("labels %v", labels)
	}
	if v := series[0].GetGauge().GetValue(); v < 49*3600 || v > 50*3600 {
		t.Errorf("expiry %v s, want about 50h", v)
	}
	m.TLSClientCertificates("orders", nil)
	if fams := scrape(t, m); len(fams["vigil_tls_certificate_expiry_seconds"].GetMetric()) != 0 {
		t.Fatal("the series stays after the cluster's TLS went")
	}
}
