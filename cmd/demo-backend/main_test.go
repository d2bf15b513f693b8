package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitLong bounds every wait for something that should happen soon; it is
// generous so a loaded machine under -race does not fail the tests.
const waitLong = 20 * time.Second

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// testBackend is a backend served in-process on 127.0.0.1:0.
type testBackend struct {
	b       *backend
	addr    string
	control string // base URL of the control endpoint, "" if off
	conn    *grpc.ClientConn
	logs    *syncBuffer
	toggles chan os.Signal
	stop    func() error // stops the backend (idempotent) and returns serve's error
}

// startBackend parses args as the command line does and serves the backend
// in-process on 127.0.0.1:0 (with the control endpoint on 127.0.0.1:0).
func startBackend(t *testing.T, args ...string) *testBackend {
	t.Helper()
	args = append([]string{"-addr", "127.0.0.1:0", "-control", "127.0.0.1:0", "-grace", "10s"}, args...)
	opts, err := parseOptions(args, io.Discard)
	if err != nil {
		t.Fatalf("parseOptions(%q): %v", args, err)
	}
	lis, err := net.Listen("tcp", opts.addr)
	if err != nil {
		t.Fatal(err)
	}
	control, err := net.Listen("tcp", opts.control)
	if err != nil {
		t.Fatal(err)
	}
	id := opts.id
	if id == "" {
		id = lis.Addr().String()
	}
	tb := &testBackend{
		addr:    lis.Addr().String(),
		control: "http://" + control.Addr().String(),
		logs:    &syncBuffer{},
		toggles: make(chan os.Signal, 1),
	}
	tb.b = newBackend(opts, id, slog.New(slog.NewTextHandler(tb.logs, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tb.b.serve(ctx, lis, control, tb.toggles) }()
	var once sync.Once
	var serveErr error
	tb.stop = func() error {
		once.Do(func() {
			cancel()
			serveErr = <-done
		})
		return serveErr
	}
	t.Cleanup(func() {
		if err := tb.stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	tb.conn = dial(t, tb.addr)
	return tb
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func callCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	t.Cleanup(cancel)
	return ctx
}

// checkStatus asks the backend for service's status; the second result is
// the gRPC code of the call.
func checkStatus(t *testing.T, conn *grpc.ClientConn, service string) (healthpb.HealthCheckResponse_ServingStatus, codes.Code) {
	t.Helper()
	resp, err := healthpb.NewHealthClient(conn).Check(callCtx(t), &healthpb.HealthCheckRequest{Service: service})
	return resp.GetStatus(), status.Code(err)
}

// watcher reads a Watch stream in the test goroutine.
type watcher struct {
	t      *testing.T
	stream grpc.ServerStreamingClient[healthpb.HealthCheckResponse]
}

func watch(t *testing.T, conn *grpc.ClientConn, service string) *watcher {
	t.Helper()
	stream, err := healthpb.NewHealthClient(conn).Watch(callCtx(t), &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("Watch(%q): %v", service, err)
	}
	return &watcher{t: t, stream: stream}
}

// next returns the next status pushed, failing the test on an error.
func (w *watcher) next() healthpb.HealthCheckResponse_ServingStatus {
	w.t.Helper()
	resp, err := w.stream.Recv()
	if err != nil {
		w.t.Fatalf("Watch Recv: %v", err)
	}
	return resp.GetStatus()
}

// expect reads statuses until want arrives. The health server keeps only the
// latest status per stream, so intermediate ones may be skipped, never
// reordered.
func (w *watcher) expect(want healthpb.HealthCheckResponse_ServingStatus) {
	w.t.Helper()
	for {
		if got := w.next(); got == want {
			return
		}
	}
}

const (
	serving    = healthpb.HealthCheckResponse_SERVING
	notServing = healthpb.HealthCheckResponse_NOT_SERVING
)

// post sets a status over the control endpoint and returns the HTTP status
// code and body.
func post(t *testing.T, base string, query url.Values) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(callCtx(t), http.MethodPost, base+"/health?"+query.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func getHealth(t *testing.T, base string) healthReport {
	t.Helper()
	req, err := http.NewRequestWithContext(callCtx(t), http.MethodGet, base+"/health", nil)
	if err != nil {
		t.Fatal(err)
	}
	code, body := do(t, req)
	if code != http.StatusOK {
		t.Fatalf("GET /health: %d %s", code, body)
	}
	var report healthReport
	if err := json.Unmarshal([]byte(body), &report); err != nil {
		t.Fatalf("GET /health body %q: %v", body, err)
	}
	return report
}

func TestUnaryCallServerIDAndInteropSemantics(t *testing.T) {
	tb := startBackend(t, "-id", "demo-7")
	client := testpb.NewTestServiceClient(tb.conn)

	var header, trailer metadata.MD
	ctx := metadata.AppendToOutgoingContext(callCtx(t), echoInitialKey, "hello", echoTrailingKey, "\x01bin")
	resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{FillServerId: true, ResponseSize: 314},
		grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil {
		t.Fatalf("UnaryCall: %v", err)
	}
	if got := resp.GetServerId(); got != "demo-7" {
		t.Errorf("server_id = %q, want demo-7", got)
	}
	if got := len(resp.GetPayload().GetBody()); got != 314 {
		t.Errorf("payload size = %d, want 314", got)
	}
	if got := header.Get(echoInitialKey); len(got) != 1 || got[0] != "hello" {
		t.Errorf("echoed header = %q, want [hello]", got)
	}
	if got := trailer.Get(echoTrailingKey); len(got) != 1 || got[0] != "\x01bin" {
		t.Errorf("echoed trailer = %q, want [\\x01bin]", got)
	}

	resp, err = client.UnaryCall(callCtx(t), &testpb.SimpleRequest{})
	if err != nil || resp.GetServerId() != "" {
		t.Errorf("UnaryCall without fill_server_id = %v, %v; want no server_id", resp, err)
	}

	_, err = client.UnaryCall(callCtx(t), &testpb.SimpleRequest{
		ResponseStatus: &testpb.EchoStatus{Code: int32(codes.ResourceExhausted), Message: "echo me"},
	})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || st.Message() != "echo me" {
		t.Errorf("status echo = %v, want RESOURCE_EXHAUSTED: echo me", err)
	}

	for _, size := range []int32{-1, maxPayload + 1} {
		_, err = client.UnaryCall(callCtx(t), &testpb.SimpleRequest{ResponseSize: size})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("response_size %d: err = %v, want INVALID_ARGUMENT", size, err)
		}
	}

	resp, err = client.UnaryCall(callCtx(t), &testpb.SimpleRequest{
		ResponseSize: 1000, ResponseCompressed: &testpb.BoolValue{Value: true},
	})
	if err != nil || len(resp.GetPayload().GetBody()) != 1000 {
		t.Errorf("compressed UnaryCall = %d bytes, %v; want 1000 bytes", len(resp.GetPayload().GetBody()), err)
	}
}

func TestDefaultServerIDIsTheAddress(t *testing.T) {
	tb := startBackend(t)
	resp, err := testpb.NewTestServiceClient(tb.conn).UnaryCall(callCtx(t), &testpb.SimpleRequest{FillServerId: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetServerId() != tb.addr {
		t.Errorf("server_id = %q, want the address %q", resp.GetServerId(), tb.addr)
	}
}

func TestStreamingCalls(t *testing.T) {
	tb := startBackend(t)
	client := testpb.NewTestServiceClient(tb.conn)

	out, err := client.StreamingOutputCall(callCtx(t), &testpb.StreamingOutputCallRequest{
		ResponseParameters: []*testpb.ResponseParameters{{Size: 3}, {Size: 5, IntervalUs: 1000}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []int{3, 5} {
		resp, err := out.Recv()
		if err != nil || len(resp.GetPayload().GetBody()) != want {
			t.Fatalf("StreamingOutputCall Recv = %v, %v; want %d bytes", resp, err, want)
		}
	}
	if _, err := out.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("StreamingOutputCall end = %v, want EOF", err)
	}

	in, err := client.StreamingInputCall(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{10, 20} {
		if err := in.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, n)}}); err != nil {
			t.Fatal(err)
		}
	}
	if resp, err := in.CloseAndRecv(); err != nil || resp.GetAggregatedPayloadSize() != 30 {
		t.Errorf("StreamingInputCall = %v, %v; want 30", resp, err)
	}

	duplex, err := client.FullDuplexCall(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := duplex.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 7}}}); err != nil {
		t.Fatal(err)
	}
	if resp, err := duplex.Recv(); err != nil || len(resp.GetPayload().GetBody()) != 7 {
		t.Fatalf("FullDuplexCall Recv = %v, %v; want 7 bytes", resp, err)
	}
	if err := duplex.Send(&testpb.StreamingOutputCallRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.Aborted), Message: "bye"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := duplex.Recv(); status.Code(err) != codes.Aborted {
		t.Errorf("FullDuplexCall status echo = %v, want ABORTED", err)
	}
}

func TestHealthModes(t *testing.T) {
	tests := []struct {
		mode       string
		wantCheck  codes.Code
		wantWatch  codes.Code
		wantList   codes.Code
		wantPostOK bool
	}{
		{mode: "full", wantCheck: codes.OK, wantWatch: codes.OK, wantList: codes.OK, wantPostOK: true},
		{mode: "check-only", wantCheck: codes.OK, wantWatch: codes.Unimplemented, wantList: codes.Unimplemented, wantPostOK: true},
		{mode: "none", wantCheck: codes.Unimplemented, wantWatch: codes.Unimplemented, wantList: codes.Unimplemented},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			tb := startBackend(t, "-health", tt.mode)
			health := healthpb.NewHealthClient(tb.conn)

			if st, code := checkStatus(t, tb.conn, ""); code != tt.wantCheck || (code == codes.OK && st != serving) {
				t.Errorf("Check = %v, %v; want %v (SERVING if OK)", st, code, tt.wantCheck)
			}
			stream, err := health.Watch(callCtx(t), &healthpb.HealthCheckRequest{})
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != tt.wantWatch {
				t.Errorf("Watch = %v, want %v", err, tt.wantWatch)
			}
			_, err = health.List(callCtx(t), &healthpb.HealthListRequest{})
			if status.Code(err) != tt.wantList {
				t.Errorf("List = %v, want %v", err, tt.wantList)
			}
			code, body := post(t, tb.control, url.Values{"status": {"NOT_SERVING"}})
			if (code == http.StatusOK) != tt.wantPostOK {
				t.Errorf("POST /health = %d %s, want OK: %v", code, body, tt.wantPostOK)
			}
		})
	}
}

func TestControlEndpointSetsStatus(t *testing.T) {
	tb := startBackend(t, "-id", "demo-c", "-services", "orders, users")

	for _, svc := range []string{"", "orders", "users"} {
		if st, code := checkStatus(t, tb.conn, svc); code != codes.OK || st != serving {
			t.Errorf("Check(%q) = %v, %v; want SERVING", svc, st, code)
		}
	}
	if _, code := checkStatus(t, tb.conn, "nope"); code != codes.NotFound {
		t.Errorf("Check(nope) code = %v, want NOT_FOUND", code)
	}

	w := watch(t, tb.conn, "orders")
	w.expect(serving)

	tests := []struct {
		service, status string
		want            healthpb.HealthCheckResponse_ServingStatus
		wantPrevious    string
	}{
		{"orders", "NOT_SERVING", notServing, "SERVING"},
		{"orders", "unknown", healthpb.HealthCheckResponse_UNKNOWN, "NOT_SERVING"},
		{"orders", "SERVICE_UNKNOWN", healthpb.HealthCheckResponse_SERVICE_UNKNOWN, "UNKNOWN"},
		{"orders", "SERVING", serving, "SERVICE_UNKNOWN"},
		{"", "NOT_SERVING", notServing, "SERVING"},
		{"new", "SERVING", serving, "SERVICE_UNKNOWN"},
	}
	for _, tt := range tests {
		code, body := post(t, tb.control, url.Values{"service": {tt.service}, "status": {tt.status}})
		if code != http.StatusOK {
			t.Fatalf("POST %s=%s: %d %s", tt.service, tt.status, code, body)
		}
		var change healthChange
		if err := json.Unmarshal([]byte(body), &change); err != nil {
			t.Fatalf("POST body %q: %v", body, err)
		}
		if change.Status != tt.want.String() || change.Previous != tt.wantPrevious {
			t.Errorf("POST %s=%s answered %+v, want status %v previous %s", tt.service, tt.status, change, tt.want, tt.wantPrevious)
		}
		if st, code := checkStatus(t, tb.conn, tt.service); code != codes.OK || st != tt.want {
			t.Errorf("after POST %s=%s: Check = %v, %v", tt.service, tt.status, st, code)
		}
		if tt.service == "orders" {
			w.expect(tt.want)
		}
	}

	report := getHealth(t, tb.control)
	want := map[string]string{"": "NOT_SERVING", "orders": "SERVING", "users": "SERVING", "new": "SERVING"}
	if report.ID != "demo-c" || report.Health != healthFull || fmt.Sprint(report.Services) != fmt.Sprint(want) {
		t.Errorf("GET /health = %+v, want id demo-c, health full, services %v", report, want)
	}
	if logs := tb.logs.String(); !strings.Contains(logs, `msg="health status changed" id=demo-c service=orders status=NOT_SERVING previous=SERVING by="control 127.0.0.1:`) {
		t.Errorf("no log line for the change in:\n%s", logs)
	}
}

func TestControlEndpointRejectsBadInput(t *testing.T) {
	tb := startBackend(t)
	if code, body := post(t, tb.control, url.Values{"status": {"HEALTHY"}}); code != http.StatusBadRequest || !strings.Contains(body, "want SERVING") {
		t.Errorf("bad status: %d %q, want 400 naming the valid statuses", code, body)
	}
	if code, _ := post(t, tb.control, url.Values{}); code != http.StatusBadRequest {
		t.Errorf("missing status: %d, want 400", code)
	}
	req, _ := http.NewRequestWithContext(callCtx(t), http.MethodPut, tb.control+"/health", nil)
	if code, _ := do(t, req); code != http.StatusMethodNotAllowed {
		t.Errorf("PUT /health: %d, want 405", code)
	}
	req, _ = http.NewRequestWithContext(callCtx(t), http.MethodGet, tb.control+"/other", nil)
	if code, _ := do(t, req); code != http.StatusNotFound {
		t.Errorf("GET /other: %d, want 404", code)
	}
	if st, _ := checkStatus(t, tb.conn, ""); st != serving {
		t.Errorf("status after bad requests = %v, want SERVING", st)
	}
}

func TestToggle(t *testing.T) {
	tb := startBackend(t, "-id", "demo-t")
	w := watch(t, tb.conn, "")
	w.expect(serving)

	tb.b.toggle("test")
	w.expect(notServing)
	tb.toggles <- syscall.SIGUSR1 // the path SIGUSR1 takes in run
	w.expect(serving)

	// Anything that is not SERVING toggles to SERVING.
	if _, err := tb.b.setStatus("", healthpb.HealthCheckResponse_UNKNOWN, "test"); err != nil {
		t.Fatal(err)
	}
	w.expect(healthpb.HealthCheckResponse_UNKNOWN)
	tb.b.toggle("test")
	w.expect(serving)

	if logs := tb.logs.String(); !strings.Contains(logs, `status=SERVING previous=NOT_SERVING by=SIGUSR1`) {
		t.Errorf("no log line for the SIGUSR1 toggle in:\n%s", logs)
	}
}

func TestFlipSchedule(t *testing.T) {
	tb := startBackend(t, "-flip-after", "50ms", "-flip-for", "100ms", "-flip-every", "300ms", "-services", "other")
	w := watch(t, tb.conn, "")
	// The first status may already be NOT_SERVING on a slow machine; expect
	// skips ahead, and two full cycles prove the repetition.
	for range 2 {
		w.expect(notServing)
		w.expect(serving)
	}
	if st, _ := checkStatus(t, tb.conn, "other"); st != serving {
		t.Errorf("schedule touched service other: %v", st)
	}
	// A watcher may hear of a change before it is logged; stop to be sure.
	if err := tb.stop(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(tb.logs.String(), "by=schedule"); n < 4 {
		t.Errorf("%d schedule log lines, want at least 4:\n%s", n, tb.logs.String())
	}
}

func TestFlipForGood(t *testing.T) {
	tb := startBackend(t, "-flip-after", "10ms")
	w := watch(t, tb.conn, "")
	w.expect(notServing)
	tb.stop()
	if strings.Contains(tb.logs.String(), "status=SERVING previous=NOT_SERVING") {
		t.Errorf("-flip-for 0 came back to SERVING:\n%s", tb.logs.String())
	}
}

func TestHealthDelay(t *testing.T) {
	tb := startBackend(t, "-health-delay", "300ms")
	health := healthpb.NewHealthClient(tb.conn)
	// Connect first so the deadline below only covers the stalled handler.
	if _, err := testpb.NewTestServiceClient(tb.conn).EmptyCall(callCtx(t), &testpb.Empty{}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := health.Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("Check with a deadline shorter than the delay = %v, want DEADLINE_EXCEEDED", err)
	}
	if st, code := checkStatus(t, tb.conn, ""); code != codes.OK || st != serving {
		t.Errorf("Check with time to wait = %v, %v; want SERVING", st, code)
	}
	w := watch(t, tb.conn, "")
	w.expect(serving)
}

func TestShutdownEndsWatchWithNotServing(t *testing.T) {
	tb := startBackend(t, "-drain-delay", "100ms")
	w := watch(t, tb.conn, "")
	w.expect(serving)
	unknown := watch(t, tb.conn, "never-registered")
	if got := unknown.next(); got != healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
		t.Fatalf("Watch of an unknown service = %v, want SERVICE_UNKNOWN", got)
	}

	stopped := make(chan error, 1)
	go func() { stopped <- tb.stop() }()
	w.expect(notServing)
	// Still serving during the drain delay: a proxy can move traffic away.
	if _, err := testpb.NewTestServiceClient(tb.conn).EmptyCall(callCtx(t), &testpb.Empty{}); err != nil {
		t.Errorf("EmptyCall during drain: %v", err)
	}
	if _, err := w.stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("Watch end = %v, want UNAVAILABLE", err)
	}
	// Every watcher hears NOT_SERVING before its stream ends.
	unknown.expect(notServing)
	if _, err := unknown.stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("Watch of unknown service end = %v, want UNAVAILABLE", err)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(waitLong):
		t.Fatal("backend did not stop")
	}
	if _, err := tb.b.setStatus("", serving, "test"); err == nil {
		t.Error("setStatus after shutdown succeeded")
	}
}

func TestGraceBoundCutsLongRPCs(t *testing.T) {
	tb := startBackend(t, "-grace", "100ms")
	stream, err := testpb.NewTestServiceClient(tb.conn).FullDuplexCall(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	// Make sure the stream reached the server before stopping.
	if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := tb.stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream after the grace period = %v, want UNAVAILABLE", err)
	}
	if !strings.Contains(tb.logs.String(), "grace period over") {
		t.Errorf("no grace warning in:\n%s", tb.logs.String())
	}
}

// TestRun drives the command itself: the address lines on stdout, a real
// SIGUSR1 and a clean return when ctx ends.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdoutR, stdoutW := io.Pipe()
	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-control", "127.0.0.1:0", "-id", "demo-run"}, stdoutW, stderr)
		stdoutW.Close()
	}()
	lines := bufio.NewScanner(stdoutR)
	var addr, control string
	for lines.Scan() {
		if a, ok := strings.CutPrefix(lines.Text(), "listening "); ok {
			addr = a
		} else if c, ok := strings.CutPrefix(lines.Text(), "control "); ok {
			control = c
			break
		} else {
			t.Fatalf("unexpected stdout line %q", lines.Text())
		}
	}
	if addr == "" || control == "" {
		t.Fatalf("no address lines; stderr:\n%s", stderr.String())
	}
	go func() { _, _ = io.Copy(io.Discard, stdoutR) }()

	conn := dial(t, addr)
	w := watch(t, conn, "")
	w.expect(serving)
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	w.expect(notServing)
	if report := getHealth(t, "http://"+control); report.Services[""] != "NOT_SERVING" || report.ID != "demo-run" {
		t.Errorf("GET /health = %+v", report)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(waitLong):
		t.Fatal("run did not return")
	}
	if !strings.Contains(stderr.String(), "by=SIGUSR1") || !strings.Contains(stderr.String(), "backend stopped") {
		t.Errorf("missing log lines in:\n%s", stderr.String())
	}
}

func TestRunErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	tests := []struct {
		name     string
		args     []string
		wantErr  string
		wantCode int
	}{
		{"help", []string{"-h"}, "help requested", 0},
		{"unknown flag", []string{"-nope"}, "flag provided but not defined", 2},
		{"stray argument", []string{"extra"}, "unexpected arguments", 2},
		{"bad health mode", []string{"-health", "sometimes"}, `-health "sometimes"`, 2},
		{"bad address", []string{"-addr", "nonsense"}, `-addr "nonsense"`, 2},
		{"negative duration", []string{"-health-delay", "-1s"}, "must not be negative", 2},
		{"repeat without duration", []string{"-flip-every", "5s"}, "-flip-every needs -flip-for", 2},
		{"period too short", []string{"-flip-for", "5s", "-flip-every", "5s"}, "must be longer than -flip-for", 2},
		{"schedule without health", []string{"-health", "none", "-flip-after", "1s"}, "need a health service", 2},
		{"address in use", []string{"-addr", busy.Addr().String()}, "address already in use", 1},
		{"control address in use", []string{"-addr", "127.0.0.1:0", "-control", busy.Addr().String()}, "control endpoint", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.wantErr)
			}
			if code := exitCode(err, &stderr); code != tt.wantCode {
				t.Errorf("exit code = %d, want %d", code, tt.wantCode)
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout = %q, want nothing", stdout.String())
			}
		})
	}
	if code := exitCode(flag.ErrHelp, io.Discard); code != 0 {
		t.Errorf("exit code for -h = %d, want 0", code)
	}
}

func TestParseOptions(t *testing.T) {
	opts, err := parseOptions([]string{"-addr", "127.0.0.1:0", "-services", " a,,b ,", "-flip-after", "8s", "-flip-for", "6s", "-flip-every", "20s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !opts.printAddr {
		t.Error("port 0 did not imply -print-addr")
	}
	if fmt.Sprint(opts.services) != "[a b]" {
		t.Errorf("services = %q, want [a b]", opts.services)
	}
	if !opts.scheduled() || opts.health != healthFull || opts.grace != 5*time.Second {
		t.Errorf("options = %+v", opts)
	}
	opts, err = parseOptions(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if opts.addr != "127.0.0.1:50051" || opts.printAddr || opts.scheduled() || opts.control != "" {
		t.Errorf("defaults = %+v", opts)
	}
}

func TestLargePayloads(t *testing.T) {
	tb := startBackend(t)
	conn, err := grpc.NewClient(tb.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxPayload+maxPayloadSlack), grpc.MaxCallSendMsgSize(maxPayload+maxPayloadSlack)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := testpb.NewTestServiceClient(conn).UnaryCall(callCtx(t), &testpb.SimpleRequest{
		ResponseSize: maxPayload,
		Payload:      &testpb.Payload{Body: make([]byte, maxPayload)},
	})
	if err != nil || len(resp.GetPayload().GetBody()) != maxPayload {
		t.Errorf("UnaryCall with %d bytes each way = %d bytes, %v", maxPayload, len(resp.GetPayload().GetBody()), err)
	}
}

// BenchmarkUnaryCall measures the backend alone (64-byte request and
// response over loopback), the baseline under a proxy's figures.
func BenchmarkUnaryCall(b *testing.B) {
	opts, err := parseOptions([]string{"-addr", "127.0.0.1:0"}, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", opts.addr)
	if err != nil {
		b.Fatal(err)
	}
	backend := newBackend(opts, "bench", slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- backend.serve(ctx, lis, nil, nil) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	client := testpb.NewTestServiceClient(conn)
	req := &testpb.SimpleRequest{FillServerId: true, ResponseSize: 64, Payload: &testpb.Payload{Body: make([]byte, 64)}}
	if _, err := client.UnaryCall(context.Background(), req); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := client.UnaryCall(context.Background(), req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := client.UnaryCall(context.Background(), req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
