package grpccode

import (
	"strings"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestName(t *testing.T) {
	for c, want := range map[codes.Code]string{
		codes.OK: "OK", codes.Canceled: "CANCELLED", codes.NotFound: "NOT_FOUND",
		codes.PermissionDenied: "PERMISSION_DENIED", codes.Unimplemented: "UNIMPLEMENTED",
		codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.Unauthenticated: "UNAUTHENTICATED",
		codes.Code(17): "UNKNOWN", codes.Code(1000): "UNKNOWN", codes.Code(^uint32(0)): "UNKNOWN",
	} {
		if got := Name(c); got != want {
			t.Errorf("Name(%d) = %q, want %q", c, got, want)
		}
	}
	if Count != 17 {
		t.Errorf("Count = %d, want the 17 codes of the specification", Count)
	}
	for c := codes.Code(0); c < codes.Code(Count); c++ {
		// grpc-go's own names, without the case and the underscores,
		// must be ours (CANCELLED is spelled Canceled there).
		want := strings.ToUpper(c.String())
		if got := strings.ReplaceAll(Name(c), "_", ""); got != want && !(c == codes.Canceled && got == "CANCELLED") {
			t.Errorf("Name(%v) = %q", c, Name(c))
		}
	}
}

func TestFromReset(t *testing.T) {
	tests := []struct {
		code http2.ErrCode
		want codes.Code
	}{
		{http2.ErrCodeNo, codes.Internal},
		{http2.ErrCodeProtocol, codes.Internal},
		{http2.ErrCodeInternal, codes.Internal},
		{http2.ErrCodeFlowControl, codes.Internal},
		{http2.ErrCodeRefusedStream, codes.Unavailable},
		{http2.ErrCodeCancel, codes.Canceled},
		{http2.ErrCodeEnhanceYourCalm, codes.ResourceExhausted},
		{http2.ErrCodeInadequateSecurity, codes.PermissionDenied},
		{http2.ErrCodeHTTP11Required, codes.Internal},
		{0xff, codes.Internal},
	}
	for _, tt := range tests {
		if got := FromReset(tt.code); got != tt.want {
			t.Errorf("FromReset(%v) = %v, want %v", tt.code, got, tt.want)
		}
	}
}
