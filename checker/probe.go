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

	"github.com/vigil-proxy/vigil/checker/internal/probeconn"
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
//     UNIMPLEMENTED means is the caller's policy (Config.OnUnimplemented).
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
// conn is vigil's probe connection (checker/internal/probeconn), whose
// errors are typed (ProbeError), or a grpc-go ClientConn, whose errors are
// classified by their codes and grpc-go's wording.
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

// ProbeError is how a health RPC on vigil's probe connection failed: its
// Kind says what went wrong (the backend answered with a non-OK status,
// or the connection was refused, broke, drained, timed out, or found no
// gRPC server), and its Status is the gRPC status a grpc-go client would
// report. Result.Err holds one for every failed gRPC probe; read it with
// errors.As.
type ProbeError = probeconn.Error

// ErrorKind is a ProbeError's kind.
type ErrorKind = probeconn.Kind

// Kinds of ProbeError (see probeconn.Kind for each one's exact meaning).
const (
	KindAnswered  = probeconn.KindAnswered  // the backend answered with a non-OK status
	KindRefused   = probeconn.KindRefused   // no connection could be made
	KindBroken    = probeconn.KindBroken    // the connection failed under the call
	KindNotGRPC   = probeconn.KindNotGRPC   // the peer does not speak gRPC over HTTP/2
	KindReset     = probeconn.KindReset     // the stream was reset
	KindDrained   = probeconn.KindDrained   // a graceful GOAWAY: retry on a new connection
	KindGoAway    = probeconn.KindGoAway    // an error GOAWAY before the call was processed
	KindTimeout   = probeconn.KindTimeout   // the deadline passed
	KindCanceled  = probeconn.KindCanceled  // the call was canceled
	KindMalformed = probeconn.KindMalformed // an answer gRPC does not allow
	KindMisuse    = probeconn.KindMisuse    // a call probe connections do not make
)

// ClassifyError turns the error of a failed health RPC into a Result, by
// the rules documented on CheckOnce. It does not know whether the caller's
// context was cancelled: check that first.
func ClassifyError(err error) Result {
	var pe *ProbeError
	if errors.As(err, &pe) {
		return classifyProbeError(pe, err)
	}
	return classifyForeign(err)
}

// classifyProbeError classifies an error of vigil's probe connection.
func classifyProbeError(pe *ProbeError, err error) Result {
	code := pe.Status.Code()
	switch pe.Kind {
	case KindAnswered, KindMalformed:
		// The backend's server answered, with a status or with an answer
		// gRPC does not allow: either is its word (as grpc-go's client
		// would report it), except the transient codes.
		if code == codes.DeadlineExceeded || code == codes.Unavailable {
			return Result{Reason: grpccode.Name(code), Cause: CauseTransport, Err: err}
		}
		if code == codes.OK {
			// An OK status carried as an error would be a bug in some
			// layer: do not call that healthy.
			return Result{Reason: reasonUnknown, Cause: CauseAnswer, Err: err}
		}
		return Result{Reason: grpccode.Name(code), Cause: CauseAnswer, Err: err}
	case KindNotGRPC, KindMisuse:
		// Whatever code came with it was made up from an HTTP status or
		// by us: the endpoint is unreachable as a gRPC backend.
		return Result{Reason: reasonUnavailable, Cause: CauseTransport, Err: err}
	default:
		// Nobody answered the question: refused, broken, reset, drained,
		// timed out.
		return Result{Reason: grpccode.Name(code), Cause: CauseTransport, Err: err}
	}
}

// grpcGoNonGRPC are fragments of the messages grpc-go's client writes when
// the peer's response is not gRPC at all (see operateHeaders in grpc-go's
// internal/transport/http2_client.go): the status code that comes with
// them is derived from an HTTP status, not answered by a gRPC server.
// grpc-go's errors carry no type that says so.
var grpcGoNonGRPC = [...]string{
	"unexpected HTTP status code received from server",
	"received unexpected content-type",
	"malformed header: missing HTTP",
	"malformed http-status",
	"malformed grpc-status",
}

// classifyForeign classifies the error of a connection that is not
// vigil's own (a grpc-go ClientConn handed to CheckOnce), from the codes
// and the wording grpc-go gives its errors.
func classifyForeign(err error) Result {
	st, ok := status.FromError(err)
	if !ok {
		// Not a gRPC status: grpc-go always returns one, so this is some
		// local failure to even try.
		return Result{Reason: reasonUnavailable, Cause: CauseTransport, Err: err}
	}
	msg := st.Message()
	for _, m := range grpcGoNonGRPC {
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
		return Result{Reason: reasonUnknown, Cause: CauseAnswer, Err: err}
	default:
		return Result{Reason: grpccode.Name(code), Cause: CauseAnswer, Err: err}
	}
}

// isGracefulDrain reports whether err ended a call only because the server
// sent a graceful GOAWAY (NO_ERROR): the stream was refused by a draining
// connection, or the server closed the connection after its GOAWAY while
// the call was in flight. For a grpc-go ClientConn, whose errors carry no
// type, it goes by grpc-go's wording: "the connection is draining" (which
// grpc-go retries transparently once, so it rarely surfaces), or
// UNAVAILABLE "closing transport due to: ..., received prior goaway: code:
// NO_ERROR".
func isGracefulDrain(err error) bool {
	var pe *ProbeError
	if errors.As(err, &pe) {
		return pe.Kind == KindDrained
	}
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
	return tcpOnce(ctx, address, timeout, nil)
}

// tcpOnce is TCPOnce, and with t also a TLS handshake: a success needs
// the endpoint's certificate verified.
func tcpOnce(ctx context.Context, address string, timeout time.Duration, t TLS) Result {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	d := net.Dialer{Timeout: timeout}
	start := time.Now()
	conn, err := d.DialContext(ctx, "tcp", address)
	if err == nil && t != nil {
		hctx, cancel := context.WithTimeout(ctx, timeout-time.Since(start))
		conn, err = handshake(hctx, conn, t.ClientConfig(address, false), false)
		cancel()
		var te *TLSError
		if errors.As(err, &te) && ctx.Err() == nil {
			return Result{Reason: reasonUnavailable, Cause: CauseTransport, Latency: time.Since(start),
				Err: &ProbeError{Kind: KindRefused, Status: status.Newf(codes.Unavailable, "connect %s: %v", address, err), Err: err}}
		}
	}
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
		r = Result{Reason: reasonDeadlineExceeded, Cause: CauseTransport,
			Err: &ProbeError{Kind: KindTimeout, Status: status.Newf(codes.DeadlineExceeded, "connect %s: %v", address, err), Err: err}}
	default:
		r = Result{Reason: reasonUnavailable, Cause: CauseTransport,
			Err: &ProbeError{Kind: KindRefused, Status: status.Newf(codes.Unavailable, "connect %s: %v", address, err), Err: err}}
	}
	r.Latency = latency
	return r
}
