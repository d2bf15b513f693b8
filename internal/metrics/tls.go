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
	descTLSExpiry = prometheus.NewDesc("vigil_tls_certificate_expiry_seconds",
		"Seconds until the certificate a TLS listener serves from this file expires (negative once expired).",
		[]string{"listener", "file"}, nil)
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
		ch <- gauge(descTLSExpiry, c.NotAfter.Sub(now).Seconds(), name, c.File)
	}
}
