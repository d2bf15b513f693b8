package checker

import (
	"fmt"

	"google.golang.org/grpc/status"
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
		return tlsHint(r.Err)
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

// ErrorText is err for a log record: a gRPC status error by its message
// alone, since the record's reason already names its code.
func ErrorText(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}
