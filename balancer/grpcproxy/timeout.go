package grpcproxy

import (
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"

	"github.com/vigil-proxy/vigil/internal/h2wire"
)

// A route's timeout (route.Entry.Timeout) bounds its RPCs: the backend is
// told the smaller of the client's deadline and the route's in
// grpc-timeout, and vigil itself ends the RPC with DEADLINE_EXCEEDED when
// the route's passes, resetting the backend stream (CANCEL) so that the
// backend sees the cancellation even if it ignores grpc-timeout.

// applyTimeout makes the request headers carry the route's timeout d as
// grpc-timeout when the client asked for none or a later one, and
// returns the headers.
func applyTimeout(headers []hpack.HeaderField, d time.Duration) []hpack.HeaderField {
	for i := range headers {
		if headers[i].Name != "grpc-timeout" {
			continue
		}
		if client, ok := h2wire.ParseTimeout(headers[i].Value); ok && client <= d {
			return headers // the client's deadline is the sooner
		}
		headers[i].Value = h2wire.FormatTimeout(d)
		return headers
	}
	return append(headers, hpack.HeaderField{Name: "grpc-timeout", Value: h2wire.FormatTimeout(d)})
}

// startTimeoutLocked arms the route's timer: when d passes before the RPC ends,
// the RPC fails with DEADLINE_EXCEEDED and its backend stream is reset.
// The caller holds s.mu.
func (s *fstream) startTimeoutLocked(d time.Duration) {
	s.timer = time.AfterFunc(d, func() {
		s.cut(codes.DeadlineExceeded, routeTimeoutMessage(d), nil)
	})
}

func routeTimeoutMessage(d time.Duration) string {
	return "vigil: route timeout of " + d.String() + " exceeded"
}

// routeTimeoutPassed returns the stream's route timeout once it has
// passed, else 0.
func (s *fstream) routeTimeoutPassed() time.Duration {
	s.mu.Lock()
	rt := s.route
	s.mu.Unlock()
	if rt == nil || rt.Timeout <= 0 || time.Since(s.start) < rt.Timeout {
		return 0
	}
	return rt.Timeout
}
