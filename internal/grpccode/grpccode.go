// Package grpccode names gRPC status codes the way the gRPC specification
// spells them ("NOT_FOUND", "DEADLINE_EXCEEDED"), which is how vigil's
// eviction log, metrics and admin API show them; grpc-go's codes.Code.String
// gives "NotFound" instead.
package grpccode

import (
	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
)

var names = [...]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

// Count is the number of codes the specification defines: codes 0 to
// Count-1 have names of their own.
const Count = len(names)

// Name returns the canonical name of c. A code outside the specification
// is "UNKNOWN", which is how gRPC says to treat it; so the set of names is
// bounded whatever a peer sends.
func Name(c codes.Code) string {
	if uint64(c) < uint64(Count) {
		return names[c]
	}
	return names[codes.Unknown]
}

// FromReset is the status code of a call whose HTTP/2 stream the peer
// reset with code, as grpc-go's client maps it (every code it does not
// name is INTERNAL): a proxy forwarding the reset and a probe reading it
// then agree with what a client talking to the backend directly sees.
func FromReset(code http2.ErrCode) codes.Code {
	switch code {
	case http2.ErrCodeCancel:
		return codes.Canceled
	case http2.ErrCodeRefusedStream:
		return codes.Unavailable
	case http2.ErrCodeEnhanceYourCalm:
		return codes.ResourceExhausted
	case http2.ErrCodeInadequateSecurity:
		return codes.PermissionDenied
	}
	return codes.Internal
}
