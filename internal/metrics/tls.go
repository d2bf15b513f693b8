package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-proxy/vigil/balancer/tlsterm"
	"github.com/vigil-proxy/vigil/internal/tlsconf"
)

var (
	descTLSHandshakes = prometheus.NewDesc("vigil_tls_handshakes_total",
		"TLS handshakes of clients on TLS listeners, by result: ok, timeout, version, alpn, client_cert, not_tls, closed, over_limit, error.",
		[]string{"listener", "result"}, nil)
	// descTLSExpiry covers both sides: a listener's served certificates
	// (cluster="") and the client certificate a cluster presents to its
	// endpoints (listener=""). PromQL treats an empty label as absent, so a
	// listener's series still select as {listener,file}.
	descTLSExpiry = prometheus.NewDesc("vigil_tls_certificate_expiry_seconds",
		"Seconds until a certificate expires (negative once expired): one a TLS listener serves from this file (listener set), or the client certificate a TLS cluster presents to its endpoints (cluster set).",
		[]string{"listener", "cluster", "file"}, nil)
)

// tlsResultIndex maps a handshake result to its counter; unknown results
// count as error.
var tlsResultIndex = func() map[tlsterm.Result]int {
	m := make(map[tlsterm.Result]int, len(tlsterm.Results))
	for i, r := range tlsterm.Results {
		m[r] = i
	}
	return m
}()

// TLSHandshake returns the handshake hook of a TLS listener
// (tlsterm.Options.OnHandshake).
func (m *Metrics) TLSHandshake(listener string) func(tlsterm.Result, error) {
	l := m.listener(listener)
	return func(r tlsterm.Result, _ error) {
		i, ok := tlsResultIndex[r]
		if !ok {
			i = tlsResultIndex[tlsterm.ResultError]
		}
		l.handshakes[i].Add(1)
	}
}

// TLSCertificates records the certificates a listener serves now; nil
// when it serves no TLS (its TLS series are then not exported).
func (m *Metrics) TLSCertificates(listener string, certs []tlsconf.Cert) {
	l := m.listener(listener)
	if certs == nil {
		l.tlsCerts.Store(nil)
		return
	}
	l.tlsCerts.Store(&certs)
}

// collectTLS exports a TLS listener's series, read at scrape time so that
// the expiry counts down.
func collectTLS(ch chan<- prometheus.Metric, name string, l *listenerState, now time.Time) {
	certs := l.tlsCerts.Load()
	if certs == nil {
		return
	}
	for i, r := range tlsterm.Results {
		ch <- counter(descTLSHandshakes, float64(l.handshakes[i].Load()), name, string(r))
	}
	seen := map[string]bool{}
	for _, c := range *certs {
		if seen[c.File] {
			continue
		}
		seen[c.File] = true
		ch <- gauge(descTLSExpiry, c.NotAfter.Sub(now).Seconds(), name, "", c.File)
	}
}

// clientCertSource is where a cluster's client certificates are read
// from at scrape time: *tlsconf.Client, whose Certs follow reloads of its
// files.
type clientCertSource interface {
	Certs() []tlsconf.Cert
}

// TLSClientCertificates records the TLS configuration a cluster dials its
// endpoints with; nil when it has none or the cluster left the
// configuration (its series are then not exported). The certificates are
// read at scrape time, so a rotated pair's expiry replaces the old one's.
func (m *Metrics) TLSClientCertificates(cluster string, c *tlsconf.Client) {
	if c == nil {
		m.clientCerts.Delete(cluster)
		return
	}
	m.clientCerts.Store(cluster, clientCertSource(c))
}

// collectClientTLS exports the expiry of the client certificates clusters
// present (none for a cluster with tls but no cert_file).
func (m *Metrics) collectClientTLS(ch chan<- prometheus.Metric, now time.Time) {
	m.clientCerts.Range(func(k, v any) bool {
		for _, c := range v.(clientCertSource).Certs() {
			ch <- gauge(descTLSExpiry, c.NotAfter.Sub(now).Seconds(), "", k.(string), c.File)
		}
		return true
	})
}
