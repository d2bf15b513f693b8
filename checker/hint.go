package checker

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/status"

	"github.com/vigil-proxy/vigil/checker/internal/probeconn"
	"github.com/vigil-proxy/vigil/internal/h2wire"
)

// Warnings the group logs once per endpoint.
const (
	msgServedAnyway  = "endpoint has no health service, serving it anyway"
	msgWatchFallback = "endpoint does not implement Watch, polling with Check"
)

const hintUnimplemented = "no grpc.health.v1 service is registered on the backend: register one, or set on_unimplemented: serve"

// Hint explains, in one line, why an endpoint was evicted with status st
// after result r, when the cause is usually a mistake on the backend or in
// cfg; "" when there is nothing to add. vigil's eviction log adds it as
// the hint key.
func Hint(st Status, r Result, cfg Config) string {
	if st.Cause == CauseTransport {
		return transportHint(r.Err, cfg)
	}
	if st.Cause != CauseAnswer {
		return ""
	}
	switch st.Reason {
	case reasonUnimplemented:
		return hintUnimplemented
	case reasonNotFound, reasonServiceUnknown:
		return fmt.Sprintf("the backend has no health status for service %q: names match exactly, and \"\" is the whole server", cfg.Service)
	}
	return ""
}

// transportHint explains a transport failure that is usually a mistake
// in the cluster's tls section: a TLS handshake that failed (tlserr.go),
// or a TLS server reached in plaintext.
func transportHint(err error, cfg Config) string {
	if h := tlsHint(err); h != "" {
		return h
	}
	if cfg.TLS != nil {
		return ""
	}
	switch {
	case errors.Is(err, h2wire.ErrTLSServer):
		return "the endpoint answered with TLS while the cluster speaks plaintext (h2c): give the cluster a tls section"
	case errors.Is(err, probeconn.ErrNoPreface):
		return "the endpoint closed the connection without a byte of HTTP/2, as a TLS server does to a plaintext client: if it serves TLS, give the cluster a tls section"
	}
	return ""
}

// ErrorText is err for a log record: a gRPC status error by its message
// alone, since the record's reason already names its code.
func ErrorText(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}
