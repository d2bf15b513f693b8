package checker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// serveRaw accepts connections on a new port and hands each to handle.
func serveRaw(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	lis := listen(t, "")
	done := make(chan struct{})
	conns := make(chan net.Conn, 100)
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			conns <- c
			go handle(c)
		}
	}()
	t.Cleanup(func() {
		_ = lis.Close()
		<-done
		close(conns)
		for c := range conns {
			_ = c.Close()
		}
	})
	return lis.Addr().String()
}

// serveHTTP serves h with the given protocols on a new port.
func serveHTTP(t *testing.T, protocols *http.Protocols, h http.Handler) string {
	t.Helper()
	lis := listen(t, "")
	srv := &http.Server{Handler: h, Protocols: protocols, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return lis.Addr().String()
}

func TestCheckOnceClassification(t *testing.T) {
	notFound := func(http.ResponseWriter, *http.Request) {}
	tests := []struct {
		name    string
		setup   func(t *testing.T) (addr, service string)
		timeout time.Duration
		want    Result
	}{
		{"serving", func(t *testing.T) (string, string) {
			return startBackend(t, "", nil).addr, ""
		}, time.Second, Result{OK: true}},
		{"serving named service", func(t *testing.T) (string, string) {
			b := startBackend(t, "", nil)
			b.set("orders", healthgrpc.HealthCheckResponse_SERVING)
			return b.addr, "orders"
		}, time.Second, Result{OK: true}},
		{"not serving", func(t *testing.T) (string, string) {
			b := startBackend(t, "", nil)
			b.set("", healthgrpc.HealthCheckResponse_NOT_SERVING)
			return b.addr, ""
		}, time.Second, Result{Reason: "NOT_SERVING", Cause: CauseAnswer}},
		{"unknown", func(t *testing.T) (string, string) {
			b := startBackend(t, "", nil)
			b.set("orders", healthgrpc.HealthCheckResponse_UNKNOWN)
			return b.addr, "orders"
		}, time.Second, Result{Reason: "UNKNOWN", Cause: CauseAnswer}},
		{"service unknown answered", func(t *testing.T) (string, string) {
			return startBackend(t, "", &fixedHealth{status: healthgrpc.HealthCheckResponse_SERVICE_UNKNOWN}).addr, "x"
		}, time.Second, Result{Reason: "SERVICE_UNKNOWN", Cause: CauseAnswer}},
		{"status outside the enum", func(t *testing.T) (string, string) {
			return startBackend(t, "", &fixedHealth{status: 99}).addr, ""
		}, time.Second, Result{Reason: "UNKNOWN", Cause: CauseAnswer}},
		{"unregistered service", func(t *testing.T) (string, string) {
			return startBackend(t, "", nil).addr, "no.such.Service"
		}, time.Second, Result{Reason: "NOT_FOUND", Cause: CauseAnswer}},
		{"permission denied", func(t *testing.T) (string, string) {
			return startBackend(t, "", &fixedHealth{err: status.Error(codes.PermissionDenied, "go away")}).addr, ""
		}, time.Second, Result{Reason: "PERMISSION_DENIED", Cause: CauseAnswer}},
		{"backend answers unavailable", func(t *testing.T) (string, string) {
			return startBackend(t, "", &fixedHealth{err: status.Error(codes.Unavailable, "overloaded")}).addr, ""
		}, time.Second, Result{Reason: "UNAVAILABLE", Cause: CauseTransport}},
		{"no health service", func(t *testing.T) (string, string) {
			return startBackend(t, "", noHealth).addr, ""
		}, time.Second, Result{Reason: "UNIMPLEMENTED", Cause: CauseAnswer}},
		{"stalled handler", func(t *testing.T) (string, string) {
			return startBackend(t, "", newStallingHealth()).addr, ""
		}, 100 * time.Millisecond, Result{Reason: "DEADLINE_EXCEEDED", Cause: CauseTransport}},
		{"nothing listening", func(t *testing.T) (string, string) {
			lis := listen(t, "")
			addr := lis.Addr().String()
			_ = lis.Close()
			return addr, ""
		}, time.Second, Result{Reason: "UNAVAILABLE", Cause: CauseTransport}},
		{"invalid address", func(t *testing.T) (string, string) {
			return "no-port-here", ""
		}, time.Second, Result{Reason: "UNAVAILABLE", Cause: CauseTransport}},
		{"http/1.1 server", func(t *testing.T) (string, string) {
			var p http.Protocols
			p.SetHTTP1(true)
			return serveHTTP(t, &p, http.HandlerFunc(notFound)), ""
		}, time.Second, Result{Reason: "UNAVAILABLE", Cause: CauseTransport}},
		{"plain http/2 server answering 404", func(t *testing.T) (string, string) {
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			return serveHTTP(t, &p, http.NotFoundHandler()), ""
		}, time.Second, Result{Reason: "UNAVAILABLE", Cause: CauseTransport}},
		{"plain http/2 server answering 200", func(t *testing.T) (string, string) {
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			return serveHTTP(t, &p, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello") })), ""
		}, time.Second, Result{Reason: "UNAVAILABLE", Cause: CauseTransport}},
		{"garbage bytes then close", func(t *testing.T) (string, string) {
			return serveRaw(t, func(c net.Conn) {
				_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n\x00\xff\xfe garbage garbage garbage"))
				_ = c.Close()
			}), ""
		}, time.Second, Result{Reason: "UNAVAILABLE", Cause: CauseTransport}},
		{"garbage bytes, connection kept", func(t *testing.T) (string, string) {
			return serveRaw(t, func(c net.Conn) {
				_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
			}), ""
		}, time.Second, Result{Reason: "UNAVAILABLE", Cause: CauseTransport}},
		{"silent peer", func(t *testing.T) (string, string) {
			return serveRaw(t, func(net.Conn) {}), ""
		}, 200 * time.Millisecond, Result{Reason: "DEADLINE_EXCEEDED", Cause: CauseTransport}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, service := tt.setup(t)
			conn := dial(t, addr)
			got := CheckOnce(context.Background(), conn, service, tt.timeout)
			if got.OK != tt.want.OK || got.Reason != tt.want.Reason || got.Cause != tt.want.Cause {
				t.Errorf("CheckOnce = {OK:%v Reason:%q Cause:%v Err:%v}, want {OK:%v Reason:%q Cause:%v}",
					got.OK, got.Reason, got.Cause, got.Err, tt.want.OK, tt.want.Reason, tt.want.Cause)
			}
			if got.OK && got.Err != nil || got.Cause == CauseTransport && got.Err == nil {
				t.Errorf("Err = %v with OK = %v, cause %v", got.Err, got.OK, got.Cause)
			}
			if got.Latency <= 0 {
				t.Errorf("Latency = %v", got.Latency)
			}
		})
	}
}

func TestCheckOnceCancelledIsMarked(t *testing.T) {
	b := startBackend(t, "", newStallingHealth())
	conn := dial(t, b.addr)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	r := CheckOnce(ctx, conn, "", 10*time.Second)
	if r.OK || r.Reason != "CANCELLED" || !errors.Is(r.Err, context.Canceled) {
		t.Errorf("CheckOnce with a cancelled context = %+v, want CANCELLED carrying context.Canceled", r)
	}
}

// TestCheckOnceGracefulGoAway stops a backend gracefully while a Check is in
// flight, then hard-closes the connection before the handler answers, as a
// server with a shutdown grace period does, and restarts it on the same
// port. grpc-go fails the call with UNAVAILABLE mentioning the prior GOAWAY;
// CheckOnce must retry on the new connection instead of reporting a failure.
func TestCheckOnceGracefulGoAway(t *testing.T) {
	for _, raw := range []bool{true, false} {
		name := "CheckOnce retries"
		if raw {
			name = "grpc-go error"
		}
		t.Run(name, func(t *testing.T) {
			stall := newStallingHealth()
			a := startBackend(t, "", stall)
			conn := dial(t, a.addr)

			type outcome struct {
				r   Result
				err error
			}
			out := make(chan outcome, 1)
			go func() {
				if raw {
					err := conn.Invoke(context.Background(), healthgrpc.Health_Check_FullMethodName,
						&healthgrpc.HealthCheckRequest{}, new(healthgrpc.HealthCheckResponse))
					out <- outcome{err: err}
					return
				}
				out <- outcome{r: CheckOnce(context.Background(), conn, "", 10*time.Second)}
			}()
			<-stall.entered

			stopped := make(chan struct{})
			go func() { a.srv.GracefulStop(); close(stopped) }()
			// GracefulStop closes the listener, then sends GOAWAY: the
			// client's connection leaves READY when it gets it.
			waitFor(t, "GOAWAY to reach the client", func() bool { return conn.GetState().String() != "READY" })
			startBackend(t, a.addr, nil) // the new instance, on the same port
			a.srv.Stop()                 // grace period over: cut the in-flight call
			<-stopped

			o := <-out
			if raw {
				if !isGracefulDrain(o.err) {
					t.Fatalf("in-flight call after graceful GOAWAY failed with %v; isGracefulDrain does not recognise it", o.err)
				}
				return
			}
			if !o.r.OK {
				t.Fatalf("CheckOnce across a graceful restart = %+v, want OK (retried on the new connection)", o.r)
			}
		})
	}
}

func TestIsGracefulDrain(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unavailable, "the connection is draining"), true},
		{status.Error(codes.Unavailable, `closing transport due to: connection error: desc = "error reading from server: EOF", received prior goaway: code: NO_ERROR`), true},
		{status.Error(codes.Unavailable, `closing transport due to: EOF, received prior goaway: code: ENHANCE_YOUR_CALM, debug data: "too_many_pings"`), false},
		{status.Error(codes.Unavailable, "connection refused"), false},
		{status.Error(codes.Internal, "the connection is draining"), false},
		{errors.New("the connection is draining"), false},
		{nil, false},
	} {
		if got := isGracefulDrain(tc.err); got != tc.want {
			t.Errorf("isGracefulDrain(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestClassifyError(t *testing.T) {
	for _, tc := range []struct {
		err    error
		reason string
		cause  Cause
	}{
		{status.Error(codes.NotFound, "unknown service"), "NOT_FOUND", CauseAnswer},
		{status.Error(codes.Internal, "grpc: failed to unmarshal the received message"), "INTERNAL", CauseAnswer},
		{status.Error(codes.Internal, "stream terminated by RST_STREAM with error code: PROTOCOL_ERROR"), "INTERNAL", CauseTransport},
		{status.Error(codes.Canceled, "stream terminated by RST_STREAM with error code: CANCEL"), "CANCELLED", CauseTransport},
		{status.Error(codes.Unimplemented, "unexpected HTTP status code received from server: 404 (Not Found); transport: received unexpected content-type \"text/html\""), "UNAVAILABLE", CauseTransport},
		{status.Error(codes.Unknown, "transport: malformed grpc-status: strconv.ParseInt: parsing \"x\""), "UNAVAILABLE", CauseTransport},
		{status.Error(codes.Code(42), "from the future"), "UNKNOWN", CauseAnswer},
		{errors.New("not a status"), "UNAVAILABLE", CauseTransport},
	} {
		r := ClassifyError(tc.err)
		if r.OK || r.Reason != tc.reason || r.Cause != tc.cause || r.Err != tc.err {
			t.Errorf("ClassifyError(%v) = %+v, want reason %s cause %v", tc.err, r, tc.reason, tc.cause)
		}
	}
}

func TestTCPOnce(t *testing.T) {
	lis := listen(t, "")
	t.Cleanup(func() { _ = lis.Close() })
	if r := TCPOnce(context.Background(), lis.Addr().String(), time.Second); !r.OK || r.Err != nil {
		t.Errorf("TCPOnce to a listener = %+v, want OK", r)
	}

	closed := listen(t, "")
	addr := closed.Addr().String()
	_ = closed.Close()
	if r := TCPOnce(context.Background(), addr, time.Second); r.OK || r.Reason != "UNAVAILABLE" || r.Cause != CauseTransport {
		t.Errorf("TCPOnce to a closed port = %+v, want UNAVAILABLE transport", r)
	}
	if r := TCPOnce(context.Background(), "127.0.0.1", time.Second); r.OK || r.Reason != "UNAVAILABLE" || r.Cause != CauseTransport || !strings.Contains(r.Err.Error(), "missing port") {
		t.Errorf("TCPOnce to an address without port = %+v, want UNAVAILABLE with the error", r)
	}
	// A timeout that has already passed exercises the timeout path without
	// needing an unreachable network.
	if r := TCPOnce(context.Background(), lis.Addr().String(), time.Nanosecond); r.OK || r.Reason != "DEADLINE_EXCEEDED" || r.Cause != CauseTransport {
		t.Errorf("TCPOnce with an expired timeout = %+v, want DEADLINE_EXCEEDED transport", r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := TCPOnce(ctx, lis.Addr().String(), time.Second); r.OK || r.Reason != "CANCELLED" {
		t.Errorf("TCPOnce with a cancelled context = %+v, want CANCELLED", r)
	}
}

var _ grpc.ClientConnInterface = (*grpc.ClientConn)(nil)

// TestClassifyProbeError: the probe connection's errors are classified by
// their kind, whatever their message says (a backend may answer with any
// message, including grpc-go's wording of a transport failure).
func TestClassifyProbeError(t *testing.T) {
	pe := func(kind ErrorKind, code codes.Code, msg string) error {
		return &ProbeError{Kind: kind, Status: status.New(code, msg)}
	}
	for _, tc := range []struct {
		err    error
		reason string
		cause  Cause
	}{
		{pe(KindAnswered, codes.NotFound, "unknown service"), "NOT_FOUND", CauseAnswer},
		{pe(KindAnswered, codes.Unimplemented, "unexpected HTTP status code received from server: 404"), "UNIMPLEMENTED", CauseAnswer},
		{pe(KindAnswered, codes.Internal, "stream terminated by RST_STREAM with error code: CANCEL"), "INTERNAL", CauseAnswer},
		{pe(KindAnswered, codes.Unavailable, "overloaded"), "UNAVAILABLE", CauseTransport},
		{pe(KindAnswered, codes.DeadlineExceeded, "too slow"), "DEADLINE_EXCEEDED", CauseTransport},
		{pe(KindMalformed, codes.Internal, "compressed"), "INTERNAL", CauseAnswer},
		{pe(KindMalformed, codes.ResourceExhausted, "too large"), "RESOURCE_EXHAUSTED", CauseAnswer},
		{pe(KindNotGRPC, codes.Unimplemented, "http 404"), "UNAVAILABLE", CauseTransport},
		{pe(KindNotGRPC, codes.Unknown, "text/html"), "UNAVAILABLE", CauseTransport},
		{pe(KindMisuse, codes.Unimplemented, "client streaming"), "UNAVAILABLE", CauseTransport},
		{pe(KindReset, codes.Internal, "reset"), "INTERNAL", CauseTransport},
		{pe(KindReset, codes.Canceled, "reset"), "CANCELLED", CauseTransport},
		{pe(KindRefused, codes.Unavailable, "refused"), "UNAVAILABLE", CauseTransport},
		{pe(KindBroken, codes.Unavailable, "broken"), "UNAVAILABLE", CauseTransport},
		{pe(KindDrained, codes.Unavailable, "draining"), "UNAVAILABLE", CauseTransport},
		{pe(KindGoAway, codes.Unavailable, "goaway"), "UNAVAILABLE", CauseTransport},
		{pe(KindTimeout, codes.DeadlineExceeded, "timeout"), "DEADLINE_EXCEEDED", CauseTransport},
		{fmt.Errorf("wrapped: %w", pe(KindAnswered, codes.PermissionDenied, "no")), "PERMISSION_DENIED", CauseAnswer},
	} {
		r := ClassifyError(tc.err)
		if r.OK || r.Reason != tc.reason || r.Cause != tc.cause || r.Err != tc.err {
			t.Errorf("ClassifyError(%v) = %+v, want reason %s cause %v", tc.err, r, tc.reason, tc.cause)
		}
	}
	if !isGracefulDrain(pe(KindDrained, codes.Unavailable, "x")) || isGracefulDrain(pe(KindAnswered, codes.Unavailable, "the connection is draining")) {
		t.Error("isGracefulDrain must go by the kind of a ProbeError, not its message")
	}
}
