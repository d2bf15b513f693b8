package checker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/vigil-proxy/vigil/internal/grpccode"
)

// Reasons used by the probes besides the health statuses and code names.
const (
	reasonUnimplemented    = "UNIMPLEMENTED"
	reasonDeadlineExceeded = "DEADLINE_EXCEEDED"
	reasonUnavailable      = "UNAVAILABLE"
	reasonCancelled        = "CANCELLED"
	reasonUnknown          = "UNKNOWN"
	reasonNotFound         = "NOT_FOUND"
	reasonServiceUnknown   = "SERVICE_UNKNOWN"
)

// CheckOnce asks conn's grpc.health.v1.Health/Check about service once,
// within timeout, and classifies the outcome:
//
//   - SERVING is a success.
//   - Any other answered status (NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN) is a
//     failure with CauseAnswer and that status as Reason. A status outside
//     the enum counts as UNKNOWN.
//   - A non-OK gRPC status returned by the backend (NOT_FOUND for an
//     unregistered service, PERMISSION_DENIED, UNIMPLEMENTED, ...) is a
//     failure with CauseAnswer and the canonical code name as Reason. What
//     UNIMPLEMENTED means is the caller's policy (Config.ServeUnimplemented).
//   - DEADLINE_EXCEEDED, UNAVAILABLE (refused, reset, unreachable, TLS
//     failure, ...) and stream resets are failures with CauseTransport:
//     the backend could not be asked.
//   - A peer that does not speak gRPC is a transport failure with reason
//     UNAVAILABLE, whatever the client made of its bytes. An HTTP/1.1
//     server or a peer sending garbage fails the HTTP/2 handshake
//     (UNAVAILABLE); a plain HTTP/2 server answers with a non-gRPC
//     response, which gRPC clients turn into a code derived from the HTTP
//     status (404 becomes UNIMPLEMENTED, 403 PERMISSION_DENIED, ...). Taking such a
//     made-up code as the backend's answer would be wrong: a web server on
//     the port would count as "no health service" and be served under
//     on_unimplemented: serve. The endpoint is unreachable as a gRPC
//     backend, which is exactly what a transport failure means.
//   - A graceful GOAWAY (NO_ERROR) that ends the call is not a failure: the
//     call is retried once, on the connection the client opens next, with
//     a fresh timeout.
//
// conn is vigil's probe connection (checker/internal/probeconn) or a
// grpc-go ClientConn: both word their errors as grpc-go does.
//
// If ctx ends first the result is a transport failure carrying ctx's
// error: a caller that cancelled ctx to stop must discard it.
func CheckOnce(ctx context.Context, conn grpc.ClientConnInterface, service string, timeout time.Duration) Result {
	req := &healthpb.HealthCheckRequest{Service: service}
	r, drained := checkAttempt(ctx, conn, req, timeout)
	if drained && ctx.Err() == nil {
		r, _ = checkAttempt(ctx, conn, req, timeout)
	}
	return r
}

// checkAttempt makes one Check call. drained reports that the call failed
// only because the server gracefully closed the connection under it.
func checkAttempt(ctx context.Context, conn grpc.ClientConnInterface, req *healthpb.HealthCheckRequest, timeout time.Duration) (r Result, drained bool) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	resp := new(healthpb.HealthCheckResponse)
	err := conn.Invoke(cctx, healthpb.Health_Check_FullMethodName, req, resp)
	latency := time.Since(start)
	if err != nil {
		if ctx.Err() != nil {
			r = contextResult(ctx.Err())
		} else {
			r = ClassifyError(err)
		}
		r.Latency = latency
		return r, isGracefulDrain(err)
	}
	r = classifyStatus(resp.GetStatus())
	r.Latency = latency
	return r, false
}

// classifyStatus turns an answered health status into a Result.
func classifyStatus(s healthpb.HealthCheckResponse_ServingStatus) Result {
	switch s {
	case healthpb.HealthCheckResponse_SERVING:
		return Result{OK: true}
	case healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_SERVICE_UNKNOWN, healthpb.HealthCheckResponse_UNKNOWN:
		return Result{Reason: s.String(), Cause: CauseAnswer}
	default:
		return Result{Reason: reasonUnknown, Cause: CauseAnswer, Err: fmt.Errorf("health status %d is not in grpc.health.v1", int32(s))}
	}
}

// nonGRPCMarkers are fragments of the messages grpc-go (and probeconn,
// which words them the same) writes when the peer's response is not gRPC
// at all (see operateHeaders in grpc-go's
// internal/transport/http2_client.go): the status code that comes with
// them is derived from an HTTP status, not answered by a gRPC server.
var nonGRPCMarkers = [...]string{
	"unexpected HTTP status code received from server",
	"received unexpected content-type",
	"malformed header: missing HTTP",
	"malformed http-status",
	"malformed grpc-status",
}

// ClassifyError turns the error of a failed health RPC into a Result, by
// the rules documented on CheckOnce. It does not know whether the caller's
// context was cancelled: check that first.
func ClassifyError(err error) Result {
	st, ok := status.FromError(err)
	if !ok {
		// Not a gRPC status: grpc-go always returns one, so this is some
		// local failure to even try.
		return Result{Reason: reasonUnavailable, Cause: CauseTransport, Err: err}
	}
	msg := st.Message()
	for _, m := range nonGRPCMarkers {
		if strings.Contains(msg, m) {
			return Result{Reason: reasonUnavailable, Cause: CauseTransport, Err: err}
		}
	}
	switch code := st.Code(); {
	case code == codes.DeadlineExceeded || code == codes.Unavailable:
		return Result{Reason: grpccode.Name(code), Cause: CauseTransport, Err: err}
	case strings.HasPrefix(msg, "stream terminated by RST_STREAM"):
		// The HTTP/2 layer reset the stream (PROTOCOL_ERROR, CANCEL,
		// REFUSED_STREAM, ...): nobody answered the question.
		return Result{Reason: grpccode.Name(code), Cause: CauseTransport, Err: err}
	case code == codes.OK:
		// A nil error never gets here; an OK status carried as an error
		// would be a bug in some layer: do not call that healthy.
		return Result{Reason: reasonUnknown, Cause: CauseAnswer, Err: err}
	default:
		return Result{Reason: grpccode.Name(code), Cause: CauseAnswer, Err: err}
	}
}

// isGracefulDrain reports whether err ended a call only because the server
// sent a graceful GOAWAY (NO_ERROR): either the stream was refused by a
// draining transport ("the connection is draining", which grpc-go retries
// transparently once, so it rarely surfaces), or the server closed the
// connection after its GOAWAY while the call was in flight, which grpc-go
// reports as UNAVAILABLE "closing transport due to: ..., received prior
// goaway: code: NO_ERROR".
func isGracefulDrain(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	msg := st.Message()
	return msg == "the connection is draining" || strings.Contains(msg, "received prior goaway: code: NO_ERROR")
}

// contextResult is the Result of a probe whose own context ended.
func contextResult(err error) Result {
	if errors.Is(err, context.DeadlineExceeded) {
		return Result{Reason: reasonDeadlineExceeded, Cause: CauseTransport, Err: err}
	}
	return Result{Reason: reasonCancelled, Cause: CauseTransport, Err: err}
}

// TCPOnce connects to address once, within timeout, and closes the
// connection at once. A connection is a success; a refused or unreachable
// address is a transport failure with reason UNAVAILABLE, a timeout one
// with reason DEADLINE_EXCEEDED. If ctx ends first the result carries
// ctx's error: a caller that cancelled ctx to stop must discard it.
func TCPOnce(ctx context.Context, address string, timeout time.Duration) Result {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	d := net.Dialer{Timeout: timeout}
	start := time.Now()
	conn, err := d.DialContext(ctx, "tcp", address)
	latency := time.Since(start)
	if err == nil {
		// A plain close (FIN) rather than a reset: backends should not log
		// probes as errors. The TIME_WAIT it leaves is on our side.
		_ = conn.Close()
		return Result{OK: true, Latency: latency}
	}
	var r Result
	var netErr net.Error
	switch {
	case ctx.Err() != nil:
		r = contextResult(ctx.Err())
	case errors.As(err, &netErr) && netErr.Timeout():
		r = Result{Reason: reasonDeadlineExceeded, Cause: CauseTransport}
	default:
		r = Result{Reason: reasonUnavailable, Cause: CauseTransport}
	}
	r.Err = fmt.Errorf("connect %s: %w", address, err)
	r.Latency = latency
	return r
}
