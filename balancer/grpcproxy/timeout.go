package grpcproxy

import (
	"strconv"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
)

// A route's timeout (route.Entry.Timeout) bounds its RPCs: the backend is
// told the smaller of the client's deadline and the route's in
// grpc-timeout, and vigil itself ends the RPC with DEADLINE_EXCEEDED when
// the route's passes, resetting the backend stream (CANCEL) so that the
// backend sees the cancellation even if it ignores grpc-timeout.

// parseTimeout parses a grpc-timeout value: at most 8 digits and a unit
// (H, M, S, m, u, n). ok is false for anything else.
func parseTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 || v[0] == '+' || v[0] == '-' {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// formatTimeout encodes d as a grpc-timeout value, in the finest unit
// that fits in 8 digits (rounded up, so the backend's deadline is never
// earlier than vigil's).
func formatTimeout(d time.Duration) string {
	const max = 99_999_999
	for _, u := range []struct {
		d time.Duration
		c byte
	}{{time.Nanosecond, 'n'}, {time.Microsecond, 'u'}, {time.Millisecond, 'm'}, {time.Second, 'S'}, {time.Minute, 'M'}} {
		if n := (d + u.d - 1) / u.d; n <= max {
			return strconv.FormatInt(int64(n), 10) + string(u.c)
		}
	}
	return strconv.FormatInt(int64(min((d+time.Hour-1)/time.Hour, max)), 10) + "H"
}

// applyTimeout makes the request headers carry the route's timeout d as
// grpc-timeout when the client asked for none or a later one, and
// returns the headers.
func applyTimeout(headers []hpack.HeaderField, d time.Duration) []hpack.HeaderField {
	for i := range headers {
		if headers[i].Name != "grpc-timeout" {
			continue
		}
		if client, ok := parseTimeout(headers[i].Value); ok && client <= d {
			return headers // the client's deadline is the sooner
		}
		headers[i].Value = formatTimeout(d)
		return headers
	}
	return append(headers, hpack.HeaderField{Name: "grpc-timeout", Value: formatTimeout(d)})
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
