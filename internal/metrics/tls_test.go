package metrics

import (
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/balancer/tlsterm"
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
