package probeconn

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kind says how a call failed: the backend's gRPC server answered with a
// non-OK status (KindAnswered), or something on the way to an answer
// went wrong (every other kind).
type Kind uint8

// Kinds of failure. Their zero value is not a kind: every Error has one.
const (
	_ Kind = iota
	// KindAnswered: the server answered with this non-OK grpc-status.
	KindAnswered
	// KindRefused: no connection could be made (refused, unreachable,
	// the dial timed out).
	KindRefused
	// KindBroken: the connection failed under the call (read or write
	// error, closed by the peer, given up by the kernel's keepalive).
	KindBroken
	// KindNotGRPC: the peer does not speak gRPC over HTTP/2: no HTTP/2
	// preface, or a response that is not a gRPC answer (an HTTP status
	// other than 200, a content type other than application/grpc, a
	// missing or malformed :status or grpc-status, DATA before HEADERS).
	KindNotGRPC
	// KindReset: the server reset the stream (RST_STREAM), or its frames
	// broke the stream's protocol and the client reset it.
	KindReset
	// KindDrained: the server closed the connection gracefully (GOAWAY
	// NO_ERROR) before processing the call, or while it was in flight;
	// the call may be made again on a new connection.
	KindDrained
	// KindGoAway: the server ended the connection with an error GOAWAY
	// before processing the call.
	KindGoAway
	// KindTimeout: the call's deadline passed.
	KindTimeout
	// KindCanceled: the call's context was canceled, or the Conn closed.
	KindCanceled
	// KindMalformed: the server answered, but not as gRPC allows (a
	// compressed message the call did not ask for, a message over the
	// receive limit, a second response to a unary call, a message that
	// does not unmarshal, trailers without END_STREAM).
	KindMalformed
	// KindMisuse: the caller asked for something probe connections do
	// not do (client streaming, a message that is not a protobuf).
	KindMisuse
)

var kindNames = [...]string{"", "answered", "refused", "broken", "not gRPC", "reset", "drained", "goaway", "timeout", "canceled", "malformed", "misuse"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && k != 0 {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Error is how a call on a Conn failed; every call that fails returns
// one. It carries the gRPC status a grpc-go client would have reported
// (status.FromError and status.Code read it) and, where there is one, the
// underlying error (errors.Is(err, syscall.ETIMEDOUT) reaches the
// socket's error).
type Error struct {
	Kind   Kind
	Status *status.Status
	// Err is the cause, if any: a dial or socket error, a context's error.
	Err error
}

// Error returns the status's message, as grpc-go's status errors do.
func (e *Error) Error() string {
	return fmt.Sprintf("rpc error: code = %s desc = %s", e.Status.Code(), e.Status.Message())
}

// GRPCStatus makes status.FromError and status.Code see e's status.
func (e *Error) GRPCStatus() *status.Status { return e.Status }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

func newError(kind Kind, code codes.Code, cause error, format string, args ...any) *Error {
	return &Error{Kind: kind, Status: status.Newf(code, format, args...), Err: cause}
}

// contextError is the error of a call whose context ended.
func contextError(err error) *Error {
	kind := KindCanceled
	if errors.Is(err, context.DeadlineExceeded) {
		kind = KindTimeout
	}
	return &Error{Kind: kind, Status: status.FromContextError(err), Err: err}
}

// connectionError is the error of a call that failed because its
// connection did.
func connectionError(err error) *Error {
	return newError(KindBroken, codes.Unavailable, err, "connection error: transport: %v", err)
}

// ErrNoPreface is wrapped by the error of a call whose connection the
// server closed (or reset) before sending a single byte: no HTTP/2
// server does that, a TLS server reading a plaintext client's preface
// does.
var ErrNoPreface = errors.New("the endpoint closed the connection before sending any HTTP/2 frame")

// errDrained fails a call that a draining connection never sent.
var errDrained = &Error{Kind: KindDrained, Status: status.New(codes.Unavailable, "the connection is draining")}

// errConnClosing fails the calls of a closed Conn.
var errConnClosing = &Error{Kind: KindCanceled, Status: status.New(codes.Canceled, "grpc: the client connection is closing")}
